//! A minimal raw NBD client for the tests, for what real clients refuse to send (requests
//! outside the export, malformed handshakes, deep pipelines, writes to an export announced
//! read-only).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use raid1_cli::nbd::proto::{self, cmd, opt, rep};

pub fn greeted(sock: &Path) -> UnixStream {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut g = [0u8; 18];
    s.read_exact(&mut g).unwrap();
    assert_eq!(
        u64::from_be_bytes(g[..8].try_into().unwrap()),
        proto::NBDMAGIC
    );
    assert_eq!(
        u64::from_be_bytes(g[8..16].try_into().unwrap()),
        proto::IHAVEOPT
    );
    assert_eq!(
        u16::from_be_bytes([g[16], g[17]]),
        proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES
    );
    s
}

pub fn option_header(option: u32, len: u32) -> Vec<u8> {
    let mut v = proto::IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

pub fn read_option_reply(s: &mut UnixStream) -> (u32, u32, Vec<u8>) {
    let mut h = [0u8; 20];
    s.read_exact(&mut h).unwrap();
    assert_eq!(
        u64::from_be_bytes(h[..8].try_into().unwrap()),
        proto::OPTION_REPLY_MAGIC
    );
    let option = u32::from_be_bytes(h[8..12].try_into().unwrap());
    let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data).unwrap();
    (option, kind, data)
}

pub fn assert_closed(s: &mut UnixStream) {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue, // replies sent before the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("expected the server to close the connection: {e}"),
        }
    }
}

pub fn request_bytes(kind: u16, flags: u16, handle: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut v = proto::REQUEST_MAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&kind.to_be_bytes());
    v.extend_from_slice(&handle.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

pub fn read_simple_reply(s: &mut UnixStream) -> (u32, u64) {
    let mut r = [0u8; 16];
    s.read_exact(&mut r).unwrap();
    assert_eq!(
        u32::from_be_bytes(r[..4].try_into().unwrap()),
        proto::SIMPLE_REPLY_MAGIC
    );
    (
        u32::from_be_bytes(r[4..8].try_into().unwrap()),
        u64::from_be_bytes(r[8..].try_into().unwrap()),
    )
}

pub struct RawClient {
    pub stream: UnixStream,
    pub size: u64,
    /// The transmission flags the server announced.
    pub flags: u16,
    pub next_handle: u64,
}

impl RawClient {
    /// Fixed newstyle handshake ending with NBD_OPT_GO for the default export.
    pub fn connect_go(sock: &Path) -> RawClient {
        let mut s = greeted(sock);
        s.write_all(&3u32.to_be_bytes()).unwrap();
        let mut data = 0u32.to_be_bytes().to_vec();
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&proto::info::BLOCK_SIZE.to_be_bytes());
        s.write_all(&option_header(opt::GO, data.len() as u32))
            .unwrap();
        s.write_all(&data).unwrap();
        let mut size = None;
        let mut flags = 0;
        let mut block_size = false;
        loop {
            let (option, kind, data) = read_option_reply(&mut s);
            assert_eq!(option, opt::GO);
            match kind {
                rep::ACK => break,
                rep::INFO => match u16::from_be_bytes([data[0], data[1]]) {
                    proto::info::EXPORT => {
                        size = Some(u64::from_be_bytes(data[2..10].try_into().unwrap()));
                        flags = u16::from_be_bytes([data[10], data[11]]);
                    }
                    proto::info::BLOCK_SIZE => block_size = true,
                    other => panic!("unexpected info {other}"),
                },
                other => panic!("unexpected reply {other:#x}"),
            }
        }
        assert!(block_size, "NBD_INFO_BLOCK_SIZE was requested");
        RawClient {
            stream: s,
            size: size.expect("NBD_INFO_EXPORT"),
            flags,
            next_handle: 1,
        }
    }

    /// Sends one request and waits for its reply: (error, read data).
    pub fn request(
        &mut self,
        kind: u16,
        flags: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) -> (u32, Vec<u8>) {
        let handle = self.next_handle;
        self.next_handle += 1;
        self.stream
            .write_all(&request_bytes(kind, flags, handle, offset, len))
            .unwrap();
        self.stream.write_all(payload).unwrap();
        let (error, got) = read_simple_reply(&mut self.stream);
        assert_eq!(got, handle);
        let mut data = Vec::new();
        if kind == cmd::READ && error == 0 {
            data = vec![0u8; len as usize];
            self.stream.read_exact(&mut data).unwrap();
        }
        (error, data)
    }

    pub fn disconnect(mut self) {
        self.stream
            .write_all(&request_bytes(cmd::DISC, 0, 0, 0, 0))
            .unwrap();
        assert_closed(&mut self.stream);
    }
}
