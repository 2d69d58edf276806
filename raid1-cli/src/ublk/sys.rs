//! The kernel's ublk interface (`include/uapi/linux/ublk_cmd.h`): command numbers, flags and
//! the layouts of the structures exchanged through `/dev/ublk-control` and `/dev/ublkcN`,
//! written out as byte layouts so no structure padding is left to the compiler.

/// `_IOC(dir, 'u', nr, size)`: the ioctl encoding of ublk commands (`UBLK_F_CMD_IOCTL_ENCODE`).
const fn ioc(dir: u32, nr: u32, size: u32) -> u32 {
    (dir << 30) | (size << 16) | ((b'u' as u32) << 8) | nr
}
const IOR: u32 = 2;
const IOWR: u32 = 3;
/// `sizeof(struct ublksrv_ctrl_cmd)`.
pub const CTRL_CMD_LEN: usize = 32;
/// `sizeof(struct ublksrv_io_cmd)`.
pub const IO_CMD_LEN: usize = 16;

pub const CMD_GET_DEV_INFO: u32 = ioc(IOR, 0x02, CTRL_CMD_LEN as u32);
pub const CMD_ADD_DEV: u32 = ioc(IOWR, 0x04, CTRL_CMD_LEN as u32);
pub const CMD_DEL_DEV: u32 = ioc(IOWR, 0x05, CTRL_CMD_LEN as u32);
pub const CMD_START_DEV: u32 = ioc(IOWR, 0x06, CTRL_CMD_LEN as u32);
pub const CMD_STOP_DEV: u32 = ioc(IOWR, 0x07, CTRL_CMD_LEN as u32);
pub const CMD_SET_PARAMS: u32 = ioc(IOWR, 0x08, CTRL_CMD_LEN as u32);
pub const CMD_GET_PARAMS: u32 = ioc(IOR, 0x09, CTRL_CMD_LEN as u32);
pub const CMD_START_USER_RECOVERY: u32 = ioc(IOWR, 0x10, CTRL_CMD_LEN as u32);
pub const CMD_END_USER_RECOVERY: u32 = ioc(IOWR, 0x11, CTRL_CMD_LEN as u32);

pub const IO_FETCH_REQ: u32 = ioc(IOWR, 0x20, IO_CMD_LEN as u32);
pub const IO_COMMIT_AND_FETCH_REQ: u32 = ioc(IOWR, 0x21, IO_CMD_LEN as u32);

/// A fetch completed with a request to serve.
pub const IO_RES_OK: i32 = 0;
/// The queue is being torn down: the command is given back and must not be reissued.
pub const IO_RES_ABORT: i32 = -libc::ENODEV;

/// The device's requests survive the death of its server (it waits, quiesced, for a new one).
pub const F_USER_RECOVERY: u64 = 1 << 3;
/// ...and requests the dead server had taken are issued again to the new one.
pub const F_USER_RECOVERY_REISSUE: u64 = 1 << 4;
/// Commands are sent with their ioctl encoding.
pub const F_CMD_IOCTL_ENCODE: u64 = 1 << 6;

/// `dev_info.state`.
pub const S_DEV_DEAD: u16 = 0;
pub const S_DEV_LIVE: u16 = 1;
pub const S_DEV_QUIESCED: u16 = 2;

pub const ATTR_VOLATILE_CACHE: u32 = 1 << 2;
pub const ATTR_FUA: u32 = 1 << 3;
pub const PARAM_TYPE_BASIC: u32 = 1 << 0;
pub const PARAM_TYPE_DISCARD: u32 = 1 << 1;

pub const OP_READ: u8 = 0;
pub const OP_WRITE: u8 = 1;
pub const OP_FLUSH: u8 = 2;
pub const OP_DISCARD: u8 = 3;
pub const OP_WRITE_ZEROES: u8 = 5;
pub const IO_F_FUA: u32 = 1 << 13;

/// The kernel's largest queue depth: the io descriptors of queue `q` are mapped at
/// `q * round_up(MAX_QUEUE_DEPTH * IO_DESC_LEN, page)` of `/dev/ublkcN`.
pub const MAX_QUEUE_DEPTH: usize = 4096;
/// `sizeof(struct ublksrv_io_desc)`.
pub const IO_DESC_LEN: usize = 24;

/// `struct ublksrv_ctrl_cmd`, the 32 bytes of a control command.
pub fn ctrl_cmd(dev_id: u32, queue_id: u16, addr: u64, len: u16, data0: u64) -> [u8; 80] {
    let mut c = [0u8; 80];
    c[0..4].copy_from_slice(&dev_id.to_ne_bytes());
    c[4..6].copy_from_slice(&queue_id.to_ne_bytes());
    c[6..8].copy_from_slice(&len.to_ne_bytes());
    c[8..16].copy_from_slice(&addr.to_ne_bytes());
    c[16..24].copy_from_slice(&data0.to_ne_bytes());
    c
}

/// `struct ublksrv_io_cmd`.
pub fn io_cmd(q_id: u16, tag: u16, result: i32, addr: u64) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0..2].copy_from_slice(&q_id.to_ne_bytes());
    c[2..4].copy_from_slice(&tag.to_ne_bytes());
    c[4..8].copy_from_slice(&result.to_ne_bytes());
    c[8..16].copy_from_slice(&addr.to_ne_bytes());
    c
}

/// `struct ublksrv_ctrl_dev_info` (64 bytes), the fields we use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevInfo {
    pub nr_hw_queues: u16,
    pub queue_depth: u16,
    pub state: u16,
    pub max_io_buf_bytes: u32,
    pub dev_id: u32,
    pub ublksrv_pid: i32,
    pub flags: u64,
}

pub const DEV_INFO_LEN: usize = 64;

impl DevInfo {
    pub fn to_bytes(self) -> [u8; DEV_INFO_LEN] {
        let mut b = [0u8; DEV_INFO_LEN];
        b[0..2].copy_from_slice(&self.nr_hw_queues.to_ne_bytes());
        b[2..4].copy_from_slice(&self.queue_depth.to_ne_bytes());
        b[4..6].copy_from_slice(&self.state.to_ne_bytes());
        b[8..12].copy_from_slice(&self.max_io_buf_bytes.to_ne_bytes());
        b[12..16].copy_from_slice(&self.dev_id.to_ne_bytes());
        b[16..20].copy_from_slice(&self.ublksrv_pid.to_ne_bytes());
        b[24..32].copy_from_slice(&self.flags.to_ne_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; DEV_INFO_LEN]) -> DevInfo {
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        DevInfo {
            nr_hw_queues: u16_at(0),
            queue_depth: u16_at(2),
            state: u16_at(4),
            max_io_buf_bytes: u32_at(8),
            dev_id: u32_at(12),
            ublksrv_pid: u32_at(16) as i32,
            flags: u64::from_ne_bytes(b[24..32].try_into().unwrap_or([0; 8])),
        }
    }
}

/// The parameters we set (`struct ublk_params` with its basic and discard parts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub attrs: u32,
    pub logical_bs_shift: u8,
    pub physical_bs_shift: u8,
    pub io_opt_shift: u8,
    pub io_min_shift: u8,
    pub max_sectors: u32,
    pub dev_sectors: u64,
    /// Discard granularity in bytes; 0: no discard part.
    pub discard_granularity: u32,
    pub max_discard_sectors: u32,
    pub max_write_zeroes_sectors: u32,
}

/// `len` + `types` + basic (32) + discard (20).
pub const PARAMS_LEN: usize = 8 + 32 + 20;

impl Params {
    pub fn to_bytes(self) -> [u8; PARAMS_LEN] {
        let mut b = [0u8; PARAMS_LEN];
        let mut types = PARAM_TYPE_BASIC;
        if self.discard_granularity != 0 {
            types |= PARAM_TYPE_DISCARD;
        }
        b[0..4].copy_from_slice(&(PARAMS_LEN as u32).to_ne_bytes());
        b[4..8].copy_from_slice(&types.to_ne_bytes());
        // basic
        b[8..12].copy_from_slice(&self.attrs.to_ne_bytes());
        b[12] = self.logical_bs_shift;
        b[13] = self.physical_bs_shift;
        b[14] = self.io_opt_shift;
        b[15] = self.io_min_shift;
        b[16..20].copy_from_slice(&self.max_sectors.to_ne_bytes());
        // chunk_sectors (20..24) 0
        b[24..32].copy_from_slice(&self.dev_sectors.to_ne_bytes());
        // virt_boundary_mask (32..40) 0
        // discard: alignment, granularity, max_discard_sectors, max_write_zeroes_sectors,
        // max_discard_segments
        if self.discard_granularity != 0 {
            b[44..48].copy_from_slice(&self.discard_granularity.to_ne_bytes());
            b[48..52].copy_from_slice(&self.max_discard_sectors.to_ne_bytes());
            b[52..56].copy_from_slice(&self.max_write_zeroes_sectors.to_ne_bytes());
            b[56..58].copy_from_slice(&1u16.to_ne_bytes());
        }
        b
    }
}

/// `basic.dev_sectors` of parameters the kernel gave back (`GET_PARAMS`).
pub fn params_dev_sectors(b: &[u8; PARAMS_LEN]) -> u64 {
    u64::from_ne_bytes(b[24..32].try_into().unwrap_or([0; 8]))
}

/// `struct ublksrv_io_desc`: what the kernel asks of one tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoDesc {
    pub op_flags: u32,
    pub nr_sectors: u32,
    pub start_sector: u64,
}

impl IoDesc {
    pub fn op(&self) -> u8 {
        (self.op_flags & 0xff) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_numbers_are_the_kernel_ioctl_encodings() {
        // _IOWR('u', 0x04, 32-byte struct) and _IOWR('u', 0x21, 16-byte struct).
        assert_eq!(CMD_ADD_DEV, 0xc020_7504);
        assert_eq!(CMD_GET_DEV_INFO, 0x8020_7502);
        assert_eq!(IO_FETCH_REQ, 0xc010_7520);
        assert_eq!(IO_COMMIT_AND_FETCH_REQ, 0xc010_7521);
    }

    #[test]
    fn params_sit_where_the_kernel_reads_them() {
        let p = Params {
            attrs: ATTR_VOLATILE_CACHE | ATTR_FUA,
            logical_bs_shift: 9,
            physical_bs_shift: 12,
            io_opt_shift: 12,
            io_min_shift: 12,
            max_sectors: 2048,
            dev_sectors: 194_560,
            discard_granularity: 4096,
            max_discard_sectors: 1 << 21,
            max_write_zeroes_sectors: 1 << 21,
        };
        let b = p.to_bytes();
        // len, types: basic and discard
        assert_eq!(&b[0..4], &(PARAMS_LEN as u32).to_ne_bytes());
        assert_eq!(&b[4..8], &3u32.to_ne_bytes());
        // basic: attrs, the shifts, max_sectors, then dev_sectors after chunk_sectors
        assert_eq!(&b[8..12], &12u32.to_ne_bytes());
        assert_eq!(&b[12..16], &[9, 12, 12, 12]);
        assert_eq!(&b[16..20], &2048u32.to_ne_bytes());
        assert_eq!(params_dev_sectors(&b), 194_560);
        // discard (after the 32 bytes of basic): alignment 0, granularity, the maxima, one segment
        assert_eq!(&b[40..44], &0u32.to_ne_bytes());
        assert_eq!(&b[44..48], &4096u32.to_ne_bytes());
        assert_eq!(&b[56..58], &1u16.to_ne_bytes());
        // no discard: only the basic part is declared
        let none = Params {
            discard_granularity: 0,
            ..p
        }
        .to_bytes();
        assert_eq!(&none[4..8], &1u32.to_ne_bytes());
        assert!(none[40..].iter().all(|&x| x == 0));
    }

    #[test]
    fn dev_info_round_trips() {
        let d = DevInfo {
            nr_hw_queues: 2,
            queue_depth: 64,
            state: S_DEV_QUIESCED,
            max_io_buf_bytes: 1 << 20,
            dev_id: 7,
            ublksrv_pid: 1234,
            flags: F_USER_RECOVERY | F_CMD_IOCTL_ENCODE,
        };
        assert_eq!(DevInfo::from_bytes(&d.to_bytes()), d);
    }
}
