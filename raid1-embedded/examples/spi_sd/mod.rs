//! An SD card (SDHC, block addressing) in SPI mode, emulated at the wire level over a byte
//! array: what the firmware's SPI bus would see from a real card. It stands in for the
//! hardware, which QEMU's mps2-an386 does not have, and is not part of what a product ships.
//!
//! The card answers the commands a host sends in SPI mode, as the SD Physical Layer
//! specification describes them: CMD0 (to the idle state), CMD8 (R7, echoing the voltage and
//! the check pattern), CMD55 + ACMD41 (idle on the first poll, ready on the next), CMD58 (R3:
//! the OCR with the power-up and high-capacity bits once ready), CMD59 (CRC on/off), CMD9 (the
//! CSD, version 2.0, as a data block), CMD12, CMD13 (R2), CMD16, CMD17/18 (data blocks behind a
//! 0xFE start token, each with its CRC16), CMD24/25 with ACMD23 (start tokens 0xFE / 0xFC, the
//! stop token 0xFD, a data-response token, then busy bytes 0x00 while "programming"). Command
//! frames carry a CRC7, which the card checks for CMD0 and CMD8 and, once CRC is on, for every
//! command; data blocks carry a CRC16, checked once CRC is on. A pulled card drives nothing:
//! MISO reads 0xFF (the pull-up).

use core::convert::Infallible;
use embedded_hal::delay::DelayNs;
use embedded_hal::spi::{ErrorType, Operation, SpiDevice};

/// Bytes per block.
pub const BLOCK: usize = 512;
/// Bytes of 0x00 the card sends after a block is written or a multi-block write stopped.
const BUSY_BYTES: u32 = 6;

// R1 response bits.
const R1_IDLE: u8 = 0x01;
const R1_ILLEGAL: u8 = 0x04;
const R1_CRC: u8 = 0x08;
const R1_PARAMETER: u8 = 0x40;
// Data-response tokens (xxx0sss1).
const DATA_ACCEPTED: u8 = 0x05;
const DATA_CRC_ERROR: u8 = 0x0B;

/// Where a block the card sends comes from.
#[derive(Clone, Copy)]
enum Source {
    Block(u32),
    Csd,
}

/// A data block being sent: an Nac gap byte, the start token, the payload, its CRC16.
#[derive(Clone, Copy)]
struct Outgoing {
    source: Source,
    pos: usize,
    crc: u16,
    multi: bool,
}

/// What the card expects from the host.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Command frames (anything else is ignored).
    Command,
    /// A start token after CMD24 (0xFE) or CMD25 (0xFC; 0xFD stops).
    Token { multi: bool },
    /// Payload and CRC16 of a block to write.
    Data { multi: bool, at: usize },
}

/// The card's state and its memory.
pub struct SpiCard<'m> {
    mem: &'m mut [u8],
    present: bool,
    idle: bool,
    crc_on: bool,
    app: bool,
    op_cond_polls: u8,
    frame: [u8; 6],
    frame_len: usize,
    phase: Phase,
    /// Block the next written data goes to.
    write_at: u32,
    buf: [u8; BLOCK + 2],
    reply: [u8; 8],
    reply_len: usize,
    reply_pos: usize,
    busy: u32,
    outgoing: Option<Outgoing>,
    /// Command frames received.
    pub commands: u32,
    /// Blocks sent to the host.
    pub blocks_read: u32,
    /// Blocks written by the host.
    pub blocks_written: u32,
}

impl<'m> SpiCard<'m> {
    /// A card (inserted, powered) over `mem`, whose length is a multiple of 1024 blocks (the
    /// unit of a version 2.0 CSD's size).
    pub fn new(mem: &'m mut [u8]) -> Self {
        assert!(!mem.is_empty() && mem.len().is_multiple_of(1024 * BLOCK));
        let mut card = SpiCard {
            mem,
            present: true,
            idle: true,
            crc_on: false,
            app: false,
            op_cond_polls: 0,
            frame: [0; 6],
            frame_len: 0,
            phase: Phase::Command,
            write_at: 0,
            buf: [0; BLOCK + 2],
            reply: [0; 8],
            reply_len: 0,
            reply_pos: 0,
            busy: 0,
            outgoing: None,
            commands: 0,
            blocks_read: 0,
            blocks_written: 0,
        };
        card.power_up();
        card
    }

    /// The card's memory.
    pub fn memory(&self) -> &[u8] {
        self.mem
    }

    /// Pull the card out: it no longer answers.
    pub fn remove(&mut self) {
        self.present = false;
    }

    /// Put the card back: it powers up and waits for CMD0 like a new card.
    pub fn insert(&mut self) {
        self.present = true;
        self.power_up();
    }

    fn power_up(&mut self) {
        self.idle = true;
        self.crc_on = false;
        self.app = false;
        self.op_cond_polls = 0;
        self.frame_len = 0;
        self.phase = Phase::Command;
        self.reply_len = 0;
        self.reply_pos = 0;
        self.busy = 0;
        self.outgoing = None;
    }

    fn blocks(&self) -> u32 {
        (self.mem.len() / BLOCK) as u32
    }

    /// One byte each way: the card shifts out its next byte while it takes in `mosi`.
    pub fn exchange(&mut self, mosi: u8) -> u8 {
        if !self.present {
            return 0xFF;
        }
        let miso = self.shift_out();
        self.shift_in(mosi);
        miso
    }

    fn shift_out(&mut self) -> u8 {
        if self.reply_pos < self.reply_len {
            self.reply_pos += 1;
            return self.reply[self.reply_pos - 1];
        }
        if self.busy > 0 {
            self.busy -= 1;
            return 0x00;
        }
        let Some(mut out) = self.outgoing else {
            return 0xFF;
        };
        let len = match out.source {
            Source::Block(_) => BLOCK,
            Source::Csd => 16,
        };
        let byte = match out.pos {
            0 => {
                out.crc = crc16(self.payload(out.source));
                0xFF
            }
            1 => 0xFE,
            p if p < 2 + len => self.payload(out.source)[p - 2],
            p if p == 2 + len => (out.crc >> 8) as u8,
            _ => out.crc as u8,
        };
        out.pos += 1;
        self.outgoing = if out.pos < 4 + len {
            Some(out)
        } else {
            self.blocks_read += u32::from(matches!(out.source, Source::Block(_)));
            match out.source {
                Source::Block(b) if out.multi && b + 1 < self.blocks() => Some(Outgoing {
                    source: Source::Block(b + 1),
                    pos: 0,
                    ..out
                }),
                _ => None,
            }
        };
        byte
    }

    fn payload(&self, source: Source) -> &[u8] {
        match source {
            Source::Block(b) => &self.mem[b as usize * BLOCK..][..BLOCK],
            Source::Csd => &CSD,
        }
    }

    fn shift_in(&mut self, mosi: u8) {
        match self.phase {
            Phase::Token { multi } => match mosi {
                0xFE if !multi => self.phase = Phase::Data { multi, at: 0 },
                0xFC if multi => self.phase = Phase::Data { multi, at: 0 },
                0xFD if multi => {
                    self.phase = Phase::Command;
                    self.busy = BUSY_BYTES;
                }
                _ => {}
            },
            Phase::Data { multi, at } => {
                self.buf[at] = mosi;
                if at + 1 < self.buf.len() {
                    self.phase = Phase::Data { multi, at: at + 1 };
                    return;
                }
                self.phase = if multi {
                    Phase::Token { multi }
                } else {
                    Phase::Command
                };
                let crc = u16::from_be_bytes([self.buf[BLOCK], self.buf[BLOCK + 1]]);
                if self.crc_on && crc != crc16(&self.buf[..BLOCK]) {
                    self.respond(&[DATA_CRC_ERROR]);
                    return;
                }
                let at = self.write_at as usize * BLOCK;
                self.mem[at..at + BLOCK].copy_from_slice(&self.buf[..BLOCK]);
                self.blocks_written += 1;
                self.write_at += 1;
                self.respond(&[DATA_ACCEPTED]);
                self.busy = BUSY_BYTES;
                if multi && self.write_at >= self.blocks() {
                    self.phase = Phase::Command;
                }
            }
            Phase::Command => {
                if self.frame_len == 0 && mosi & 0xC0 != 0x40 {
                    return;
                }
                self.frame[self.frame_len] = mosi;
                self.frame_len += 1;
                if self.frame_len == self.frame.len() {
                    self.frame_len = 0;
                    self.command();
                }
            }
        }
    }

    fn respond(&mut self, bytes: &[u8]) {
        self.reply[..bytes.len()].copy_from_slice(bytes);
        self.reply_len = bytes.len();
        self.reply_pos = 0;
    }

    fn command(&mut self) {
        self.commands += 1;
        let f = self.frame;
        let cmd = f[0] & 0x3F;
        let arg = u32::from_be_bytes([f[1], f[2], f[3], f[4]]);
        let app = core::mem::take(&mut self.app);
        // Any command ends a block being sent (CMD12 is how the host does it).
        self.outgoing = None;
        let r1 = u8::from(self.idle) * R1_IDLE;
        // A gap byte (Ncr) before each response.
        if (self.crc_on || cmd == 0 || cmd == 8) && f[5] != (crc7(&f[..5]) << 1 | 1) {
            self.respond(&[0xFF, r1 | R1_CRC]);
            return;
        }
        let in_range = arg < self.blocks();
        match (app, cmd) {
            (_, 0) => {
                self.power_up();
                self.respond(&[0xFF, R1_IDLE]);
            }
            (false, 8) => self.respond(&[0xFF, r1, 0, 0, (arg >> 8) as u8 & 0x0F, arg as u8]),
            (false, 55) => {
                self.app = true;
                self.respond(&[0xFF, r1]);
            }
            (true, 41) => {
                self.op_cond_polls = self.op_cond_polls.saturating_add(1);
                if self.op_cond_polls >= 2 {
                    self.idle = false;
                }
                self.respond(&[0xFF, u8::from(self.idle) * R1_IDLE]);
            }
            (false, 58) => {
                let ready = if self.idle { 0x00 } else { 0xC0 };
                self.respond(&[0xFF, r1, ready, 0xFF, 0x80, 0x00]);
            }
            (false, 59) => {
                self.crc_on = arg & 1 == 1;
                self.respond(&[0xFF, r1]);
            }
            // In the idle state only the initialisation commands above are legal.
            _ if self.idle => self.respond(&[0xFF, r1 | R1_ILLEGAL]),
            (true, 23) => self.respond(&[0xFF, r1]),
            (false, 9) => {
                self.respond(&[0xFF, r1]);
                self.outgoing = Some(Outgoing {
                    source: Source::Csd,
                    pos: 0,
                    crc: 0,
                    multi: false,
                });
            }
            // The stuff byte, then R1.
            (false, 12) => self.respond(&[0xFF, r1]),
            (false, 13) => self.respond(&[0xFF, r1, 0x00]),
            (false, 16) if arg == BLOCK as u32 => self.respond(&[0xFF, r1]),
            (false, 16) => self.respond(&[0xFF, r1 | R1_PARAMETER]),
            (false, 17 | 18) if in_range => {
                self.respond(&[0xFF, r1]);
                self.outgoing = Some(Outgoing {
                    source: Source::Block(arg),
                    pos: 0,
                    crc: 0,
                    multi: cmd == 18,
                });
            }
            (false, 24 | 25) if in_range => {
                self.respond(&[0xFF, r1]);
                self.write_at = arg;
                self.phase = Phase::Token { multi: cmd == 25 };
            }
            (false, 17 | 18 | 24 | 25) => self.respond(&[0xFF, r1 | R1_PARAMETER]),
            _ => self.respond(&[0xFF, r1 | R1_ILLEGAL]),
        }
    }
}

/// CSD version 2.0 of a card of `CARD_BLOCKS` blocks: C_SIZE = blocks / 1024 - 1, 512-byte
/// read and write blocks, 25 MHz, CRC7 in the last byte.
const CSD: [u8; 16] = {
    let c_size = (crate::CARD_BLOCKS / 1024 - 1) as u32;
    let mut csd = [
        0x40, // CSD_STRUCTURE 1 (version 2.0)
        0x0E, // TAAC
        0x00, // NSAC
        0x32, // TRAN_SPEED: 25 MHz
        0x5B, // CCC (high bits)
        0x59, // CCC (low bits), READ_BL_LEN 9
        0x00,
        (c_size >> 16) as u8 & 0x3F,
        (c_size >> 8) as u8,
        c_size as u8,
        0x7F, // ERASE_BLK_EN, SECTOR_SIZE
        0x80,
        0x0A, // R2W_FACTOR 2, WRITE_BL_LEN 9 (high bits)
        0x40, // WRITE_BL_LEN (low bits)
        0x00,
        0x00,
    ];
    csd[15] = crc7(csd.split_at(15).0) << 1 | 1;
    csd
};

/// CRC7 of command frames and the CSD (polynomial x^7 + x^3 + 1).
const fn crc7(data: &[u8]) -> u8 {
    let mut crc = 0u8;
    let mut i = 0;
    while i < data.len() {
        let mut bit = 0;
        while bit < 8 {
            let top = ((data[i] << bit) ^ (crc << 1)) & 0x80;
            crc = (crc << 1) & 0x7F;
            if top != 0 {
                crc ^= 0x09;
            }
            bit += 1;
        }
        i += 1;
    }
    crc
}

/// CRC16 of data blocks (CCITT polynomial x^16 + x^12 + x^5 + 1, initial value 0).
fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0u16;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                crc << 1 ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The SPI device (bus and chip select) the card sits on.
pub struct SpiSd<'c, 'm>(pub &'c mut SpiCard<'m>);

impl ErrorType for SpiSd<'_, '_> {
    type Error = Infallible;
}

impl SpiDevice<u8> for SpiSd<'_, '_> {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
        for op in operations {
            match op {
                Operation::Read(buf) => buf.iter_mut().for_each(|b| *b = self.0.exchange(0xFF)),
                Operation::Write(buf) => buf.iter().for_each(|&b| {
                    self.0.exchange(b);
                }),
                Operation::Transfer(read, write) => {
                    for i in 0..read.len().max(write.len()) {
                        let miso = self.0.exchange(write.get(i).copied().unwrap_or(0xFF));
                        if let Some(r) = read.get_mut(i) {
                            *r = miso;
                        }
                    }
                }
                Operation::TransferInPlace(buf) => {
                    buf.iter_mut().for_each(|b| *b = self.0.exchange(*b))
                }
                Operation::DelayNs(_) => {}
            }
        }
        Ok(())
    }
}

/// The driver's delay: a busy loop on the target (25 MHz, as the MPS2 board's clock), nothing
/// on the host.
pub struct Delay;

impl DelayNs for Delay {
    fn delay_ns(&mut self, ns: u32) {
        #[cfg(target_os = "none")]
        cortex_m::asm::delay(ns / 40 + 1);
        #[cfg(not(target_os = "none"))]
        let _ = ns;
    }
}
