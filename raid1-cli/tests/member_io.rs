//! The io_uring member engine against image files, loop devices and a member that returns real EIO
//! (nbdkit's error filter behind nbdfuse). Needs root, loop devices and /dev/fuse; the tests that need
//! them fail with a message saying so when they are missing.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raid1_cli::member_io::{
    EngineConfig, Errno, IoCommand, IoCompletion, IoOp, Member, MemberIo, MemberKind, OpenFailure,
    SubmitError,
};

const MIB: u64 = 1 << 20;

fn image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let f = File::create(&path).unwrap();
    f.set_len(size).unwrap();
    path
}

fn small_engine(members: Vec<Member>) -> MemberIo {
    MemberIo::new(
        members,
        EngineConfig {
            queue_depth: 32,
            buffer_size: 64 * 1024,
            buffer_count: 64,
            register_buffers: true,
        },
    )
    .unwrap()
}

/// Waits until `n` completions arrived and returns them.
fn collect(io: &mut MemberIo, n: usize) -> Vec<IoCompletion> {
    let mut out = Vec::new();
    while out.len() < n {
        io.wait(1).unwrap();
        io.reap_into(&mut out);
    }
    out
}

fn fill(buf: &mut [u8], seed: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (seed.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8;
    }
}

/// Writes 32 distinct 64 KiB blocks at once, flushes, reads them back through the engine and through the
/// page cache, and checks every byte.
fn write_read_verify(io: &mut MemberIo, member: usize) {
    let bufs: Vec<_> = (0..32).map(|_| io.alloc_buffer().unwrap()).collect();
    for (i, b) in bufs.iter().enumerate() {
        fill(io.buffer_mut(*b).unwrap(), i as u64);
    }
    for (i, b) in bufs.iter().enumerate() {
        let op = IoOp::Write {
            buffer: *b,
            buffer_offset: 0,
            fua: i % 2 == 0,
        };
        io.submit(IoCommand {
            tag: 1000 + i as u64,
            member,
            op,
            offset: i as u64 * 128 * 1024,
            len: 65536,
        })
        .unwrap();
        // The kernel may write from the buffer now: the engine refuses access to it.
        assert!(io.buffer_mut(*b).is_none());
    }
    assert_eq!(io.in_flight(), 32);
    io.flush().unwrap();
    let mut tags: Vec<u64> = collect(io, 32)
        .into_iter()
        .map(|c| {
            assert_eq!(c.result, Ok(65536), "tag {}", c.tag);
            c.tag
        })
        .collect();
    tags.sort();
    assert_eq!(tags, (1000..1032).collect::<Vec<_>>());
    io.submit(IoCommand {
        tag: 7,
        member,
        op: IoOp::Flush,
        offset: 0,
        len: 0,
    })
    .unwrap();
    assert_eq!(
        collect(io, 1),
        vec![IoCompletion {
            tag: 7,
            result: Ok(0)
        }]
    );
    for b in &bufs {
        io.buffer_mut(*b).unwrap().fill(0);
    }
    for (i, b) in bufs.iter().enumerate() {
        let op = IoOp::Read {
            buffer: *b,
            buffer_offset: 0,
        };
        io.submit(IoCommand {
            tag: 2000 + i as u64,
            member,
            op,
            offset: i as u64 * 128 * 1024,
            len: 65536,
        })
        .unwrap();
    }
    for c in collect(io, 32) {
        assert_eq!(c.result, Ok(65536));
    }
    let mut expect = vec![0u8; 65536];
    for (i, b) in bufs.iter().enumerate() {
        fill(&mut expect, i as u64);
        assert!(
            io.buffer(*b).unwrap()[..65536] == expect[..],
            "block {i} differs after read-back"
        );
    }
    let mut f = File::open(io.member(member).unwrap().path()).unwrap();
    let mut got = vec![0u8; 65536];
    for i in 0..32u64 {
        f.seek(SeekFrom::Start(i * 128 * 1024)).unwrap();
        f.read_exact(&mut got).unwrap();
        fill(&mut expect, i);
        assert!(got == expect, "block {i} differs through the page cache");
    }
    for b in bufs {
        assert!(io.free_buffer(b));
    }
}

#[test]
fn image_file_write_read_flush_and_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), "m0.img", 8 * MIB);
    let member = Member::open(&path).unwrap();
    assert_eq!(member.kind(), MemberKind::File);
    assert_eq!(member.size(), 8 * MIB);
    assert!(member.logical_block_size() >= 512 && member.logical_block_size().is_power_of_two());
    let mut io = small_engine(vec![member]);
    assert!(
        io.uses_fixed_buffers(),
        "the pool should register as fixed buffers"
    );
    write_read_verify(&mut io, 0);
}

#[test]
fn tmpfs_file_without_fixed_buffers() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let path = image(dir.path(), "m0.img", 8 * MIB);
    let member = Member::open(&path).unwrap();
    let mut io = MemberIo::new(
        vec![member],
        EngineConfig {
            queue_depth: 64,
            buffer_size: 65536,
            buffer_count: 40,
            register_buffers: false,
        },
    )
    .unwrap();
    assert!(!io.uses_fixed_buffers());
    write_read_verify(&mut io, 0);
}

#[test]
fn discard_and_write_zeroes_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), "m0.img", 4 * MIB);
    {
        let mut f = File::options().write(true).open(&path).unwrap();
        f.write_all(&vec![0x5a; 4 * MIB as usize]).unwrap();
        f.sync_all().unwrap();
    }
    let mut io = small_engine(vec![Member::open(&path).unwrap()]);
    io.submit(IoCommand {
        tag: 1,
        member: 0,
        op: IoOp::Discard,
        offset: MIB,
        len: MIB as u32,
    })
    .unwrap();
    io.submit(IoCommand {
        tag: 2,
        member: 0,
        op: IoOp::WriteZeroes,
        offset: 3 * MIB,
        len: 4096,
    })
    .unwrap();
    let mut done = collect(&mut io, 2);
    done.sort_by_key(|c| c.tag);
    assert_eq!(
        done,
        vec![
            IoCompletion {
                tag: 1,
                result: Ok(0)
            },
            IoCompletion {
                tag: 2,
                result: Ok(0)
            }
        ]
    );
    let mut data = Vec::new();
    File::open(&path).unwrap().read_to_end(&mut data).unwrap();
    let m = MIB as usize;
    assert!(data[..m].iter().all(|b| *b == 0x5a));
    assert!(
        data[m..2 * m].iter().all(|b| *b == 0),
        "punched range reads as zeroes"
    );
    assert!(data[2 * m..3 * m].iter().all(|b| *b == 0x5a));
    assert!(data[3 * m..3 * m + 4096].iter().all(|b| *b == 0));
    assert!(data[3 * m + 4096..].iter().all(|b| *b == 0x5a));
}

#[test]
fn malformed_commands_are_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), "m0.img", MIB);
    let mut io = small_engine(vec![Member::open(&path).unwrap()]);
    let b = io.alloc_buffer().unwrap();
    let read = |offset, len| IoCommand {
        tag: 1,
        member: 0,
        op: IoOp::Read {
            buffer: b,
            buffer_offset: 0,
        },
        offset,
        len,
    };
    assert_eq!(
        io.submit(IoCommand {
            member: 3,
            ..read(0, 4096)
        }),
        Err(SubmitError::Invalid {
            field: "member",
            value: 3
        })
    );
    assert_eq!(
        io.submit(read(100, 4096)),
        Err(SubmitError::Invalid {
            field: "offset",
            value: 100
        })
    );
    assert_eq!(
        io.submit(read(0, 100)),
        Err(SubmitError::Invalid {
            field: "len",
            value: 100
        })
    );
    assert_eq!(
        io.submit(read(MIB - 4096, 8192)),
        Err(SubmitError::Invalid {
            field: "offset",
            value: MIB - 4096
        })
    );
    assert_eq!(
        io.submit(read(0, 128 * 1024)),
        Err(SubmitError::Invalid {
            field: "len",
            value: 128 * 1024
        })
    );
    let bad_buffer = IoOp::Read {
        buffer: raid1_cli::member_io::BufferId(60000),
        buffer_offset: 0,
    };
    assert_eq!(
        io.submit(IoCommand {
            op: bad_buffer,
            ..read(0, 4096)
        }),
        Err(SubmitError::Invalid {
            field: "buffer",
            value: 60000
        })
    );
    assert_eq!(io.in_flight(), 0);
    // Nothing was queued: the engine still works.
    io.submit(read(0, 4096)).unwrap();
    assert_eq!(
        collect(&mut io, 1),
        vec![IoCompletion {
            tag: 1,
            result: Ok(4096)
        }]
    );
}

#[test]
fn a_full_engine_answers_busy_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), "m0.img", MIB);
    let mut io = MemberIo::new(
        vec![Member::open(&path).unwrap()],
        EngineConfig {
            queue_depth: 8,
            buffer_size: 4096,
            buffer_count: 64,
            register_buffers: true,
        },
    )
    .unwrap();
    let capacity = io.free_slots();
    assert!(capacity >= 8);
    let b = io.alloc_buffer().unwrap();
    for tag in 0..capacity as u64 {
        let op = IoOp::Read {
            buffer: b,
            buffer_offset: 0,
        };
        io.submit(IoCommand {
            tag,
            member: 0,
            op,
            offset: (tag % 256) * 4096,
            len: 4096,
        })
        .unwrap();
    }
    let op = IoOp::Read {
        buffer: b,
        buffer_offset: 0,
    };
    assert_eq!(
        io.submit(IoCommand {
            tag: 999,
            member: 0,
            op,
            offset: 0,
            len: 4096
        }),
        Err(SubmitError::Busy)
    );
    assert_eq!(collect(&mut io, capacity).len(), capacity);
    assert_eq!(io.in_flight(), 0);
    io.submit(IoCommand {
        tag: 999,
        member: 0,
        op,
        offset: 0,
        len: 4096,
    })
    .unwrap();
    assert_eq!(collect(&mut io, 1)[0].tag, 999);
}

#[test]
fn a_locked_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = image(dir.path(), "m0.img", MIB);
    let first = Member::open(&path).unwrap();
    let err = Member::open(&path).unwrap_err();
    assert!(matches!(err.reason, OpenFailure::InUse), "{err}");
    assert!(err.to_string().contains("m0.img"), "{err}");
    drop(first);
    Member::open(&path).unwrap();
}

/// A loop device, detached on drop.
struct LoopDevice(PathBuf);

impl LoopDevice {
    fn attach(file: &Path) -> LoopDevice {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .expect("losetup runs");
        assert!(
            out.status.success(),
            "losetup -f --show failed (root and loop devices needed): {out:?}"
        );
        LoopDevice(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        // Detaching completes asynchronously: wait until the backing file is released.
        let name = self
            .0
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let backing = PathBuf::from(format!("/sys/block/{name}/loop/backing_file"));
        let start = Instant::now();
        while backing.exists() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn loop_device_member_discovery_io_discard_and_exclusive_open() {
    let dir = tempfile::tempdir().unwrap();
    let backing = image(dir.path(), "backing.img", 16 * MIB);
    let dev = LoopDevice::attach(&backing);
    let member = Member::open(&dev.0).unwrap();
    assert_eq!(member.kind(), MemberKind::BlockDevice);
    assert_eq!(member.size(), 16 * MIB);
    assert_eq!(member.logical_block_size(), 512);
    assert!(
        member.supports_discard(),
        "loop devices over a file support discard"
    );

    // A second opener is refused while the member is held, with the device named.
    let err = Member::open(&dev.0).unwrap_err();
    assert!(matches!(err.reason, OpenFailure::InUse), "{err}");
    assert!(
        err.to_string().contains(&dev.0.display().to_string()),
        "{err}"
    );

    let mut io = small_engine(vec![member]);
    write_read_verify(&mut io, 0);

    // Discard the first 1 MiB through BLOCK_URING_CMD_DISCARD; a loop device punches the backing file.
    io.submit(IoCommand {
        tag: 5,
        member: 0,
        op: IoOp::Discard,
        offset: 0,
        len: MIB as u32,
    })
    .unwrap();
    io.submit(IoCommand {
        tag: 6,
        member: 0,
        op: IoOp::WriteZeroes,
        offset: 2 * MIB,
        len: 65536,
    })
    .unwrap();
    let mut done = collect(&mut io, 2);
    done.sort_by_key(|c| c.tag);
    assert_eq!(
        done,
        vec![
            IoCompletion {
                tag: 5,
                result: Ok(0)
            },
            IoCompletion {
                tag: 6,
                result: Ok(0)
            }
        ]
    );
    let b = io.alloc_buffer().unwrap();
    io.submit(IoCommand {
        tag: 8,
        member: 0,
        op: IoOp::Read {
            buffer: b,
            buffer_offset: 0,
        },
        offset: 0,
        len: 65536,
    })
    .unwrap();
    assert_eq!(collect(&mut io, 1)[0].result, Ok(65536));
    assert!(
        io.buffer(b).unwrap().iter().all(|x| *x == 0),
        "discarded range of a loop device reads zeroes"
    );

    drop(io);
    // Closed: it can be opened again.
    let again = Member::open(&dev.0).unwrap();
    drop(again);

    // A claim that ends a moment later (as the kernel's deferred release of an io_uring's
    // registered files does) is waited out, not reported as "in use".
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&dev.0)
        .unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        drop(holder);
    });
    let started = Instant::now();
    let opened = Member::open(&dev.0);
    release.join().unwrap();
    assert!(
        opened.is_ok(),
        "a claim released after 150 ms must be waited out: {:?} after {:?}",
        opened.err().map(|e| e.to_string()),
        started.elapsed()
    );
    drop(opened);
    // A running array's add does not wait: the same claim is refused at once.
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&dev.0)
        .unwrap();
    let err = Member::open_no_wait(&dev.0).unwrap_err();
    assert!(matches!(err.reason, OpenFailure::InUse), "{err}");
    drop(holder);
}

#[test]
fn a_mounted_block_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backing = image(dir.path(), "fs.img", 16 * MIB);
    let dev = LoopDevice::attach(&backing);
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&dev.0)
        .status()
        .unwrap();
    assert!(mkfs.success());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = Command::new("mount")
        .arg(&dev.0)
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mount.success());
    let err = Member::open(&dev.0);
    let _ = Command::new("umount").arg(&mnt).status();
    let err = err.unwrap_err();
    assert!(matches!(err.reason, OpenFailure::InUse), "{err}");
}

/// nbdkit (memory plugin + error filter) exported through nbdfuse: a file whose reads fail with EIO while
/// a trigger file exists. Everything is torn down on drop.
struct FailingMember {
    dir: tempfile::TempDir,
    nbdkit: Child,
    nbdfuse: Child,
}

impl FailingMember {
    fn start() -> FailingMember {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("kit.sock");
        let trigger = dir.path().join("fail-reads");
        let nbdkit = Command::new("nbdkit")
            .args(["-f", "--exit-with-parent", "-U"])
            .arg(&sock)
            .args([
                "--filter=error",
                "memory",
                "16M",
                "error-pread-rate=100%",
                "error=EIO",
            ])
            .arg(format!("error-pread-file={}", trigger.display()))
            .stdout(Stdio::null())
            .spawn()
            .expect("nbdkit runs");
        wait_for(|| sock.exists(), "nbdkit socket");
        let mnt = dir.path().join("fuse");
        std::fs::create_dir(&mnt).unwrap();
        let nbdfuse = Command::new("nbdfuse")
            .arg(mnt.join("disk"))
            .arg(format!("nbd+unix:///?socket={}", sock.display()))
            .spawn()
            .expect("nbdfuse runs (needs /dev/fuse)");
        wait_for(
            || std::fs::metadata(mnt.join("disk")).is_ok_and(|m| m.len() == 16 * MIB),
            "nbdfuse file",
        );
        FailingMember {
            dir,
            nbdkit,
            nbdfuse,
        }
    }

    fn disk(&self) -> PathBuf {
        self.dir.path().join("fuse").join("disk")
    }

    fn fail_reads(&self, on: bool) {
        let trigger = self.dir.path().join("fail-reads");
        if on {
            File::create(trigger).unwrap();
        } else {
            std::fs::remove_file(trigger).unwrap();
        }
    }
}

impl Drop for FailingMember {
    fn drop(&mut self) {
        let mnt = self.dir.path().join("fuse");
        let start = Instant::now();
        loop {
            let out = Command::new("fusermount3")
                .arg("-u")
                .arg(&mnt)
                .stderr(Stdio::null())
                .status();
            if out.is_ok_and(|s| s.success()) || start.elapsed() > Duration::from_secs(5) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&mnt)
            .stderr(Stdio::null())
            .status();
        let _ = self.nbdfuse.kill();
        let _ = self.nbdfuse.wait();
        let _ = self.nbdkit.kill();
        let _ = self.nbdkit.wait();
    }
}

fn wait_for(mut ready: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_result(io: &mut MemberIo, member: usize, tag: u64) -> Result<u32, Errno> {
    let b = io.alloc_buffer().unwrap();
    let op = IoOp::Read {
        buffer: b,
        buffer_offset: 0,
    };
    io.submit(IoCommand {
        tag,
        member,
        op,
        offset: 64 * 1024,
        len: 4096,
    })
    .unwrap();
    let c = collect(io, 1);
    io.free_buffer(b);
    assert_eq!(c[0].tag, tag);
    c[0].result
}

#[test]
fn eio_from_a_failing_member_file_and_loop_device() {
    let failing = FailingMember::start();
    let fuse_member = Member::open(&failing.disk()).unwrap();
    let dev = LoopDevice::attach(&failing.disk());
    let loop_member = Member::open(&dev.0).unwrap();
    let mut io = small_engine(vec![fuse_member, loop_member]);
    assert_eq!(read_result(&mut io, 0, 1), Ok(4096));
    assert_eq!(read_result(&mut io, 1, 2), Ok(4096));
    failing.fail_reads(true);
    assert_eq!(read_result(&mut io, 0, 3), Err(Errno(libc::EIO)));
    // The loop device may serve the block from its page cache; read a block it has not seen.
    let b = io.alloc_buffer().unwrap();
    let op = IoOp::Read {
        buffer: b,
        buffer_offset: 0,
    };
    io.submit(IoCommand {
        tag: 4,
        member: 1,
        op,
        offset: 8 * MIB,
        len: 4096,
    })
    .unwrap();
    assert_eq!(collect(&mut io, 1)[0].result, Err(Errno(libc::EIO)));
    failing.fail_reads(false);
    assert_eq!(
        read_result(&mut io, 0, 5),
        Ok(4096),
        "the member recovers when the fault goes away"
    );
    drop(io);
}
