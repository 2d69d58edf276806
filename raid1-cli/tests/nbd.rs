//! The NBD server against real clients: qemu-io, qemu-img, nbdinfo, nbdfuse (with a loop device, ext4 and
//! e2fsck on top), and a raw client written here for what those clients refuse to send (requests outside
//! the export, malformed handshakes, deep pipelines). The server runs in a thread of the test, exporting
//! an image file through the io_uring member engine.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raid1_cli::member_io::export::MemberBackend;
use raid1_cli::member_io::{EngineConfig, Member};
use raid1_cli::nbd::proto::{self, cmd, err, opt, rep};
use raid1_cli::nbd::{ListenAddress, NbdServer, ServerConfig};

const MIB: u64 = 1 << 20;

/// An NBD server on a thread, exporting an image file; stopped and joined on drop.
struct TestServer {
    dir: tempfile::TempDir,
    sock: PathBuf,
    tcp: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(size: u64) -> TestServer {
        Self::start_in(tempfile::tempdir().unwrap(), size)
    }

    fn start_in(dir: tempfile::TempDir, size: u64) -> TestServer {
        let image = dir.path().join("export.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(size)
            .unwrap();
        let sock = dir.path().join("nbd.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (sock2, stop2) = (sock.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let member = Member::open(&image).unwrap();
            let backend = MemberBackend::new(member, EngineConfig::default()).unwrap();
            let config = ServerConfig {
                export_name: "disk".into(),
                ..Default::default()
            };
            let mut server = NbdServer::new(backend, config);
            server.listen(&ListenAddress::Unix(sock2)).unwrap();
            let bound = server.listen(&"tcp:127.0.0.1:0".parse().unwrap()).unwrap();
            let ListenAddress::Tcp(addr) = bound else {
                unreachable!()
            };
            tx.send(addr).unwrap();
            server.run(&stop2).unwrap();
        });
        let tcp = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server starts");
        TestServer {
            dir,
            sock,
            tcp,
            stop,
            thread: Some(thread),
        }
    }

    fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.sock.display())
    }

    fn image(&self) -> PathBuf {
        self.dir.path().join("export.img")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let r = t.join();
            if !std::thread::panicking() {
                r.expect("server thread ends cleanly");
            }
        }
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"))
}

fn qemu_io(uri: &str, commands: &[&str]) -> Output {
    let mut args = vec!["-f", "raw", uri];
    for c in commands {
        args.push("-c");
        args.push(c);
    }
    run("qemu-io", &args)
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("failed"),
        "{what}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn qemu_io_writes_reads_verifies_and_data_reaches_the_file() {
    let server = TestServer::start(64 * MIB);
    let out = qemu_io(
        &server.uri(),
        &["write -P 0xab 0 64k", "read -P 0xab 0 64k"],
    );
    assert_ok(&out, "qemu-io write/read 0xab");
    // A wrong pattern must fail: proves the check above can fail.
    let out = qemu_io(&server.uri(), &["read -P 0xcd 0 64k"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Pattern verification failed"));
    // FUA writes, zeroes, discard, flush, a 4 MiB request, unaligned I/O (qemu does read-modify-write
    // because the server advertises a 512-byte minimum block size), and the last block of the export.
    let out = qemu_io(
        &server.uri(),
        &[
            "write -f -P 0x11 1M 128k",
            "write -z 1M 4k",
            "read -P 0 1M 4k",
            "read -P 0x11 1052672 122880",
            "write -P 0x22 8M 4M",
            "read -P 0x22 8M 4M",
            "discard 8M 1M",
            "flush",
            "write -P 0x33 100001 3",
            "read -P 0x33 100001 3",
            "write -P 0x44 67104768 4096",
            "read -P 0x44 67104768 4096",
        ],
    );
    assert_ok(&out, "qemu-io mixed commands");
    let data = std::fs::read(server.image()).unwrap();
    assert!(
        data[..65536].iter().all(|b| *b == 0xab),
        "the 0xab write reached the image file"
    );
    assert!(
        data[(MIB + 4096) as usize..(MIB + 131072) as usize]
            .iter()
            .all(|b| *b == 0x11)
    );
    assert_eq!(&data[100001..100004], &[0x33; 3]);
    assert!(data[data.len() - 4096..].iter().all(|b| *b == 0x44));
}

#[test]
fn qemu_img_info_and_nbdinfo_see_the_export() {
    let server = TestServer::start(48 * MIB);
    let out = run("qemu-img", &["info", "--output=json", &server.uri()]);
    assert_ok(&out, "qemu-img info");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["virtual-size"], 48 * MIB);

    let out = run("nbdinfo", &["--json", &server.uri()]);
    assert_ok(&out, "nbdinfo");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["protocol"], "newstyle-fixed");
    let export = &info["exports"][0];
    assert_eq!(export["export-size"], 48 * MIB);
    for flag in [
        "can_flush",
        "can_fua",
        "can_trim",
        "can_zero",
        "can_multi_conn",
    ] {
        assert_eq!(export[flag], true, "{flag}: {export}");
    }
    assert_eq!(export["is_read_only"], false);
    assert_eq!(export["block_size_maximum"], 32 * MIB);
    assert_eq!(export["block_size_minimum"], 512);

    // NBD_OPT_LIST, and a named export over TCP.
    let out = run("nbdinfo", &["--list", "--json", &server.uri()]);
    assert_ok(&out, "nbdinfo --list");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["exports"][0]["export-name"], "disk");
    let tcp_uri = format!("nbd://{}/disk", server.tcp);
    let out = run("nbdinfo", &["--size", &tcp_uri]);
    assert_ok(&out, "nbdinfo over TCP");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (48 * MIB).to_string()
    );
    // An unknown export name is refused (NBD_REP_ERR_UNKNOWN) and the server goes on.
    let out = run(
        "nbdinfo",
        &["--size", &format!("nbd://{}/nope", server.tcp)],
    );
    assert!(!out.status.success());
    let out = qemu_io(&tcp_uri, &["write -P 0x5e 0 4k", "read -P 0x5e 0 4k"]);
    assert_ok(&out, "qemu-io over TCP");
}

#[test]
fn out_of_range_reads_fail_cleanly_and_the_server_serves_the_next_client() {
    let server = TestServer::start(16 * MIB);
    let out = qemu_io(&server.uri(), &["read 16M 4k"]);
    assert!(
        !out.status.success() || String::from_utf8_lossy(&out.stdout).contains("failed"),
        "{out:?}"
    );
    let out = qemu_io(&server.uri(), &["read 16380k 8k"]);
    assert!(
        !out.status.success() || String::from_utf8_lossy(&out.stdout).contains("failed"),
        "{out:?}"
    );
    // The raw client sends what qemu-io refuses to: the server answers with the protocol's errors and
    // keeps the connection.
    let mut c = RawClient::connect_go(&server.sock);
    assert_eq!(c.size, 16 * MIB);
    assert_eq!(
        c.request(cmd::READ, 0, 16 * MIB, 4096, &[]),
        (err::EINVAL, vec![])
    );
    assert_eq!(
        c.request(cmd::READ, 0, u64::MAX - 10, 4096, &[]),
        (err::EINVAL, vec![])
    );
    assert_eq!(
        c.request(cmd::READ, 0, 0, 33 * MIB as u32, &[]),
        (err::EINVAL, vec![])
    );
    assert_eq!(
        c.request(cmd::WRITE, 0, 16 * MIB - 512, 1024, &[7u8; 1024]),
        (err::ENOSPC, vec![])
    );
    // A write larger than the maximum payload: its payload is skipped and the stream stays in sync.
    let big = vec![9u8; 33 * MIB as usize];
    assert_eq!(
        c.request(cmd::WRITE, 0, 0, big.len() as u32, &big),
        (err::EINVAL, vec![])
    );
    assert_eq!(
        c.request(cmd::TRIM, 0, 16 * MIB, 512, &[]),
        (err::EINVAL, vec![])
    );
    assert_eq!(
        c.request(cmd::WRITE_ZEROES, 0, 16 * MIB, 512, &[]),
        (err::ENOSPC, vec![])
    );
    assert_eq!(c.request(77, 0, 0, 512, &[]), (err::EINVAL, vec![]));
    assert_eq!(
        c.request(cmd::READ, 0x80, 0, 512, &[]),
        (err::EINVAL, vec![]),
        "unknown command flag"
    );
    // Unaligned to the advertised minimum block size: refused by the O_DIRECT backend, not fatal.
    assert_eq!(
        c.request(cmd::WRITE, 0, 100, 3, &[1, 2, 3]),
        (err::EINVAL, vec![])
    );
    // Still in sync: a valid write and read on the same connection.
    assert_eq!(
        c.request(cmd::WRITE, proto::cflags::FUA, 4096, 4096, &[0x42; 4096]),
        (0, vec![])
    );
    assert_eq!(
        c.request(cmd::READ, 0, 4096, 4096, &[]),
        (0, vec![0x42; 4096])
    );
    c.disconnect();
    let out = qemu_io(&server.uri(), &["read -P 0x42 4k 4k"]);
    assert_ok(&out, "next client after bad requests");
}

#[test]
fn malformed_handshakes_close_only_that_client() {
    let server = TestServer::start(8 * MIB);
    let mut healthy = RawClient::connect_go(&server.sock);
    // Unknown client flags.
    let mut s = greeted(&server.sock);
    s.write_all(&0x8000_0000u32.to_be_bytes()).unwrap();
    assert_closed(&mut s);
    // Bad option magic.
    let mut s = greeted(&server.sock);
    s.write_all(&3u32.to_be_bytes()).unwrap();
    s.write_all(&[0x55; 16]).unwrap();
    assert_closed(&mut s);
    // An option length beyond what the server buffers.
    let mut s = greeted(&server.sock);
    s.write_all(&3u32.to_be_bytes()).unwrap();
    s.write_all(&option_header(opt::GO, u32::MAX)).unwrap();
    assert_closed(&mut s);
    // Garbage in the transmission phase (bad request magic).
    let mut c = RawClient::connect_go(&server.sock);
    c.stream.write_all(&[0xee; 28]).unwrap();
    assert_closed(&mut c.stream);
    // Malformed NBD_OPT_GO data gets NBD_REP_ERR_INVALID, an unknown option NBD_REP_ERR_UNSUP: not fatal.
    let mut s = greeted(&server.sock);
    s.write_all(&3u32.to_be_bytes()).unwrap();
    s.write_all(&option_header(opt::GO, 3)).unwrap();
    s.write_all(&[0, 0, 9]).unwrap();
    assert_eq!(read_option_reply(&mut s).1, rep::ERR_INVALID);
    s.write_all(&option_header(99, 0)).unwrap();
    assert_eq!(read_option_reply(&mut s).1, rep::ERR_UNSUP);
    s.write_all(&option_header(opt::STRUCTURED_REPLY, 0))
        .unwrap();
    assert_eq!(read_option_reply(&mut s).1, rep::ERR_UNSUP);
    // NBD_OPT_ABORT: acknowledged, then the server closes.
    s.write_all(&option_header(opt::ABORT, 0)).unwrap();
    assert_eq!(read_option_reply(&mut s).1, rep::ACK);
    assert_closed(&mut s);
    // The first client never noticed.
    assert_eq!(
        healthy.request(cmd::WRITE, 0, 0, 512, &[1; 512]),
        (0, vec![])
    );
    assert_eq!(
        healthy.request(cmd::READ, 0, 0, 512, &[]),
        (0, vec![1; 512])
    );
    healthy.disconnect();
}

#[test]
fn random_bytes_from_many_clients_do_not_hurt_the_server() {
    let server = TestServer::start(8 * MIB);
    let mut rng = raid1_testkit::Rng::new(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng.next_u64();
    for round in 0..60 {
        // Half the clients send garbage right after the greeting, half after a successful GO.
        let mut stream = if round % 2 == 0 {
            greeted(&server.sock)
        } else {
            RawClient::connect_go(&server.sock).stream
        };
        let len = 1 + (next() % 4096) as usize;
        let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 4 == 1 && junk.len() >= 28 {
            // A valid request magic, so the header parser and checker see random fields.
            junk[..4].copy_from_slice(&proto::REQUEST_MAGIC.to_be_bytes());
        }
        let _ = stream.write_all(&junk);
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut sink = [0u8; 4096];
        let _ = stream.read(&mut sink);
    }
    let out = qemu_io(
        &server.uri(),
        &["write -P 0x61 0 64k", "read -P 0x61 0 64k"],
    );
    assert_ok(&out, "qemu-io after random clients");
}

#[test]
fn old_clients_use_export_name() {
    let server = TestServer::start(8 * MIB);
    for (client_flags, zeroes) in [(1u32, 124usize), (3, 0)] {
        let mut s = greeted(&server.sock);
        s.write_all(&client_flags.to_be_bytes()).unwrap();
        s.write_all(&option_header(opt::EXPORT_NAME, 4)).unwrap();
        s.write_all(b"disk").unwrap();
        let mut reply = vec![0u8; 10 + zeroes];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), 8 * MIB);
        let flags = u16::from_be_bytes(reply[8..10].try_into().unwrap());
        assert_eq!(flags & proto::tflags::HAS_FLAGS, 1);
        assert!(reply[10..].iter().all(|b| *b == 0));
        let mut c = RawClient {
            stream: s,
            size: 8 * MIB,
            next_handle: 1,
        };
        assert_eq!(c.request(cmd::READ, 0, 0, 512, &[]), (0, vec![0; 512]));
        c.disconnect();
    }
    // An unknown name with NBD_OPT_EXPORT_NAME: the only possible answer is closing.
    let mut s = greeted(&server.sock);
    s.write_all(&1u32.to_be_bytes()).unwrap();
    s.write_all(&option_header(opt::EXPORT_NAME, 4)).unwrap();
    s.write_all(b"nope").unwrap();
    assert_closed(&mut s);
}

#[test]
fn many_requests_in_flight_are_answered_by_handle() {
    let server = TestServer::start(64 * MIB);
    let mut c = RawClient::connect_go(&server.sock);
    // 200 pipelined writes of distinct 8 KiB blocks (more than the per-client in-flight limit), then 200
    // reads, then a flush; replies may come in any order and are matched by handle.
    let mut wire = Vec::new();
    for i in 0..200u64 {
        let block = vec![(i % 251) as u8; 8192];
        wire.extend_from_slice(&request_bytes(cmd::WRITE, 0, 1000 + i, i * 65536, 8192));
        wire.extend_from_slice(&block);
    }
    let writer = {
        let mut s = c.stream.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&wire).unwrap())
    };
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let (error, handle) = read_simple_reply(&mut c.stream);
        assert_eq!(error, 0);
        assert!(
            (1000..1200).contains(&handle) && seen.insert(handle),
            "handle {handle}"
        );
    }
    writer.join().unwrap();
    let mut wire = Vec::new();
    for i in 0..200u64 {
        wire.extend_from_slice(&request_bytes(cmd::READ, 0, 5000 + i, i * 65536, 8192));
    }
    wire.extend_from_slice(&request_bytes(cmd::FLUSH, 0, 9999, 0, 0));
    c.stream.write_all(&wire).unwrap();
    let mut got = std::collections::HashMap::new();
    let mut flushed = false;
    for _ in 0..201 {
        let (error, handle) = read_simple_reply(&mut c.stream);
        assert_eq!(error, 0);
        if handle == 9999 {
            flushed = true;
            continue;
        }
        let mut data = vec![0u8; 8192];
        c.stream.read_exact(&mut data).unwrap();
        got.insert(handle, data);
    }
    assert!(flushed);
    for i in 0..200u64 {
        assert!(
            got[&(5000 + i)].iter().all(|b| *b == (i % 251) as u8),
            "block {i}"
        );
    }
    c.disconnect();
}

#[test]
fn a_client_that_does_not_read_its_replies_is_throttled_not_fatal() {
    let server = TestServer::start(64 * MIB);
    let mut slow = RawClient::connect_go(&server.sock);
    // 2000 reads of 64 KiB: 125 MiB of replies, more than the server queues for one client.
    let mut wire = Vec::new();
    for i in 0..2000u64 {
        wire.extend_from_slice(&request_bytes(cmd::READ, 0, i, (i % 1000) * 65536, 65536));
    }
    slow.stream.write_all(&wire).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Meanwhile another client is served normally.
    let mut other = RawClient::connect_go(&server.sock);
    assert_eq!(
        other.request(cmd::WRITE, 0, 0, 4096, &[3; 4096]),
        (0, vec![])
    );
    other.disconnect();
    // Now the slow client reads everything: every reply arrives, once.
    let mut seen = vec![false; 2000];
    let mut data = vec![0u8; 65536];
    for _ in 0..2000 {
        let (error, handle) = read_simple_reply(&mut slow.stream);
        assert_eq!(error, 0);
        assert!(!std::mem::replace(&mut seen[handle as usize], true));
        slow.stream.read_exact(&mut data).unwrap();
    }
    slow.disconnect();
}

#[test]
fn several_clients_at_once() {
    let server = TestServer::start(64 * MIB);
    let uri = server.uri();
    let tcp_uri = format!("nbd://{}/disk", server.tcp);
    let children: Vec<(u8, Child)> = (0..6u8)
        .map(|i| {
            let pattern = 0x10 + i;
            let off = u64::from(i) * 4 * MIB;
            let target = if i % 2 == 0 {
                uri.clone()
            } else {
                tcp_uri.clone()
            };
            let write = format!("write -P {pattern} {off} 2M");
            let read = format!("read -P {pattern} {off} 2M");
            let child = Command::new("qemu-io")
                .args([
                    "-f", "raw", &target, "-c", &write, "-c", &read, "-c", &write, "-c", &read,
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (pattern, child)
        })
        .collect();
    // Meanwhile, raw clients hold connections open and keep working.
    let mut idle: Vec<RawClient> = (0..4)
        .map(|_| RawClient::connect_go(&server.sock))
        .collect();
    for (i, c) in idle.iter_mut().enumerate() {
        let off = 40 * MIB + i as u64 * 4096;
        assert_eq!(
            c.request(cmd::WRITE, 0, off, 4096, &[i as u8; 4096]),
            (0, vec![])
        );
    }
    for (pattern, child) in children {
        let out = child.wait_with_output().unwrap();
        assert_ok(&out, &format!("client with pattern {pattern}"));
    }
    for (i, mut c) in idle.into_iter().enumerate() {
        let off = 40 * MIB + i as u64 * 4096;
        assert_eq!(
            c.request(cmd::READ, 0, off, 4096, &[]),
            (0, vec![i as u8; 4096])
        );
        c.disconnect();
    }
    let data = std::fs::read(server.image()).unwrap();
    for i in 0..6u64 {
        let s = (i * 4 * MIB) as usize;
        assert!(
            data[s..s + 2 * MIB as usize]
                .iter()
                .all(|b| u64::from(*b) == 0x10 + i),
            "client {i}"
        );
    }
}

/// Tears down the nbdfuse -> loop -> ext4 chain whatever happens.
struct Chain {
    fuse_dir: PathBuf,
    mnt: PathBuf,
    nbdfuse: Option<Child>,
    loop_dev: Option<String>,
}

impl Drop for Chain {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(&self.mnt)
            .stderr(Stdio::null())
            .status();
        if let Some(dev) = self.loop_dev.take() {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
            let name = dev.trim_start_matches("/dev/").to_string();
            wait_until(Duration::from_secs(5), || {
                !Path::new(&format!("/sys/block/{name}/loop/backing_file")).exists()
            });
        }
        let fuse_dir = self.fuse_dir.clone();
        wait_until(Duration::from_secs(5), || {
            Command::new("fusermount3")
                .arg("-u")
                .arg(&fuse_dir)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.fuse_dir)
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.nbdfuse.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sh(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ext4_through_nbdfuse_and_a_loop_device() {
    assert!(Path::new("/dev/fuse").exists(), "this test needs /dev/fuse");
    let server = TestServer::start(256 * MIB);
    let work = tempfile::tempdir().unwrap();
    let mut chain = Chain {
        fuse_dir: work.path().join("fuse"),
        mnt: work.path().join("mnt"),
        nbdfuse: None,
        loop_dev: None,
    };
    std::fs::create_dir(&chain.fuse_dir).unwrap();
    std::fs::create_dir(&chain.mnt).unwrap();
    let disk = chain.fuse_dir.join("disk");
    chain.nbdfuse = Some(
        Command::new("nbdfuse")
            .arg(&disk)
            .arg(server.uri())
            .spawn()
            .expect("nbdfuse runs"),
    );
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::metadata(&disk)
            .is_ok_and(|m| m.len() == 256 * MIB)),
        "nbdfuse exposes the export"
    );
    let dev = sh(
        "losetup",
        &["-f", "--show", "--direct-io=on", disk.to_str().unwrap()],
    )
    .trim()
    .to_string();
    chain.loop_dev = Some(dev.clone());
    sh("mkfs.ext4", &["-q", "-F", &dev]);
    let mnt = chain.mnt.to_str().unwrap().to_string();
    sh("mount", &[&dev, &mnt]);
    let mut files = Vec::new();
    for i in 0..8u64 {
        let content: Vec<u8> = (0..(3 * MIB + i * 4099))
            .map(|j| ((j * 13 + i) % 256) as u8)
            .collect();
        let path = chain.mnt.join(format!("file{i}"));
        std::fs::write(&path, &content).unwrap();
        files.push((path, content));
    }
    sh("sync", &[]);
    sh("umount", &[&mnt]);
    let fsck = run("e2fsck", &["-fn", &dev]);
    assert!(
        fsck.status.success(),
        "e2fsck -fn: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    // Drop every cached page of the loop device so the remount reads through NBD.
    sh("blockdev", &["--flushbufs", &dev]);
    sh("mount", &[&dev, &mnt]);
    for (path, content) in &files {
        assert!(
            std::fs::read(path).unwrap() == *content,
            "{} differs after remount",
            path.display()
        );
    }
    sh("umount", &[&mnt]);
    drop(chain);
    // The data reached the image file: it is a clean ext4 filesystem on its own.
    let fsck = run("e2fsck", &["-fn", server.image().to_str().unwrap()]);
    assert!(
        fsck.status.success(),
        "e2fsck on the image: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

// ---- a minimal raw NBD client ----

fn greeted(sock: &Path) -> UnixStream {
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

fn option_header(option: u32, len: u32) -> Vec<u8> {
    let mut v = proto::IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

fn read_option_reply(s: &mut UnixStream) -> (u32, u32, Vec<u8>) {
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

fn assert_closed(s: &mut UnixStream) {
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

fn request_bytes(kind: u16, flags: u16, handle: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut v = proto::REQUEST_MAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&kind.to_be_bytes());
    v.extend_from_slice(&handle.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

fn read_simple_reply(s: &mut UnixStream) -> (u32, u64) {
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

struct RawClient {
    stream: UnixStream,
    size: u64,
    next_handle: u64,
}

impl RawClient {
    /// Fixed newstyle handshake ending with NBD_OPT_GO for the default export.
    fn connect_go(sock: &Path) -> RawClient {
        let mut s = greeted(sock);
        s.write_all(&3u32.to_be_bytes()).unwrap();
        let mut data = 0u32.to_be_bytes().to_vec();
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&proto::info::BLOCK_SIZE.to_be_bytes());
        s.write_all(&option_header(opt::GO, data.len() as u32))
            .unwrap();
        s.write_all(&data).unwrap();
        let mut size = None;
        let mut block_size = false;
        loop {
            let (option, kind, data) = read_option_reply(&mut s);
            assert_eq!(option, opt::GO);
            match kind {
                rep::ACK => break,
                rep::INFO => match u16::from_be_bytes([data[0], data[1]]) {
                    proto::info::EXPORT => {
                        size = Some(u64::from_be_bytes(data[2..10].try_into().unwrap()))
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
            next_handle: 1,
        }
    }

    /// Sends one request and waits for its reply: (error, read data).
    fn request(
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

    fn disconnect(mut self) {
        self.stream
            .write_all(&request_bytes(cmd::DISC, 0, 0, 0, 0))
            .unwrap();
        assert_closed(&mut self.stream);
    }
}
