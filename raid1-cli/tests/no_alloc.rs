//! The running array's data path allocates nothing per request in steady state: `raid1 run`'s
//! two threads (the array loop and the NBD thread), in this process, serve 4 KiB and 1 MiB
//! writes and reads (one at a time and eight in flight) while a counting allocator counts every
//! allocation made on either thread. A payload is copied once on its way in (from the
//! server's receive buffer into the pool buffer that every member write is sent from) and not
//! at all on its way out (a read's data goes to the socket from the buffer it was read into).

#[path = "run_common.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{CMD_READ, CMD_WRITE, NbdClient, RAID1, ok, sparse_images};
use raid1_cli::array::{
    self, StartOptions, control::ControlServer, engine::MAX_REQUEST_BYTES, event_loop,
};
use raid1_cli::nbd::{ListenAddress, ServerConfig};

/// Counts the allocations of the threads that ask for it, while counting is on.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.load(Ordering::Relaxed) && COUNTED.with(Cell::get) {
        let n = ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // RAID1_ALLOC_TRACE=1 prints where the first allocations come from.
        if n < 8 && !TRACING.with(Cell::get) && std::env::var_os("RAID1_ALLOC_TRACE").is_some() {
            TRACING.with(|t| t.set(true));
            eprintln!(
                "allocation {n}:\n{}",
                std::backtrace::Backtrace::force_capture()
            );
            TRACING.with(|t| t.set(false));
        }
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting touches only
// atomics and a const-initialised thread-local (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded as given.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded as given.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded as given.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as given.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// 4 KiB and 1 MiB writes and reads over the first `span` bytes, one at a time and eight in
/// flight; the data read back is checked.
fn workload(c: &mut NbdClient, span: u64, round: u64, big: &mut [u8], small: &mut [u8]) {
    for (i, b) in big.iter_mut().enumerate() {
        *b = (i as u64 ^ round) as u8;
    }
    for (i, b) in small.iter_mut().enumerate() {
        *b = (i as u64 * 7 + round) as u8;
    }
    let mib = MAX_REQUEST_BYTES as u64;
    for k in 0..8u64 {
        let at = (k * mib) % span;
        c.request(CMD_WRITE, 0, at, big.len() as u32, big).unwrap();
        c.request(CMD_WRITE, 0, at + 4096 * k, 4096, small).unwrap();
    }
    let mut back = vec![0u8; big.len()];
    for k in 0..8u64 {
        let at = (k * mib) % span;
        let h = c.send(CMD_READ, 0, at, big.len() as u32, &[]).unwrap();
        c.receive(h, &mut back).unwrap();
        // The small write landed inside the big one's range.
        let s = (4096 * k) as usize;
        assert_eq!(&back[..s], &big[..s], "round {round}, read {k}");
        assert_eq!(&back[s..s + 4096], small, "round {round}, read {k}");
    }
    // Eight 4 KiB writes in flight, then eight reads in flight; the server answers them in
    // any order.
    let mut handles: Vec<u64> = (0..8u64)
        .map(|k| c.send(CMD_WRITE, 0, 4096 * (64 + k), 4096, small).unwrap())
        .collect();
    while !handles.is_empty() {
        let h = c.receive_any(|_| &mut []).unwrap();
        let at = handles
            .iter()
            .position(|&x| x == h)
            .expect("a reply for a write sent");
        handles.swap_remove(at);
    }
    let mut handles: Vec<u64> = (0..8u64)
        .map(|k| c.send(CMD_READ, 0, 4096 * (64 + k), 4096, &[]).unwrap())
        .collect();
    let mut page = [0u8; 4096];
    while !handles.is_empty() {
        let h = c.receive_any(|_| &mut page[..]).unwrap();
        let at = handles
            .iter()
            .position(|&x| x == h)
            .expect("a reply for a read sent");
        handles.swap_remove(at);
        assert_eq!(&page[..], small, "round {round}");
    }
}

#[test]
fn the_data_path_allocates_nothing_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let devs = sparse_images(dir.path(), "m", 2, 64 << 20);
    // No bitmap: a write to a chunk not yet dirty starts a bitmap round (metadata, written
    // once per chunk), which is not the per-request path measured here.
    ok(Command::new(RAID1)
        .args([
            "create",
            "-l1",
            "-n2",
            "--assume-clean",
            "-N",
            "noalloc",
            "-b",
            "none",
        ])
        .args(&devs));
    // `raid1 run --name noalloc --sync-speed-max 0 DEV DEV`'s options, as its parser makes them.
    let opts = {
        use clap::Parser;
        #[derive(Parser)]
        struct Run {
            #[command(flatten)]
            start: StartOptions,
        }
        let args = ["raid1-run", "--name", "noalloc", "--sync-speed-max", "0"]
            .map(std::ffi::OsString::from)
            .into_iter()
            .chain(devs.iter().map(|d| d.as_os_str().to_owned()));
        Run::parse_from(args).start
    };
    let (mut engine, _) = array::assemble_engine(&opts).unwrap();
    let config = ServerConfig {
        max_payload: MAX_REQUEST_BYTES,
        log_prefix: String::new(),
        ..ServerConfig::default()
    };
    let sock = dir.path().join("noalloc.nbd");
    let frontend =
        event_loop::Frontend::listen(&engine, config, &ListenAddress::Unix(sock.clone())).unwrap();
    let mut control = ControlServer::bind(&dir.path().join("noalloc.sock"), "noalloc").unwrap();

    // The client runs on a thread of its own. This thread runs the array loop and the loop
    // starts the NBD thread: both are counted.
    let stop = Arc::new(AtomicBool::new(false));
    // The loop stops when the client is done, and also when it panics (a request not answered
    // within the client's timeout, a wrong read): the test then fails with the client's panic
    // instead of serving for ever.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let stop2 = StopOnDrop(stop.clone());
    let client = std::thread::spawn(move || {
        let _stop = stop2;
        let mut c = NbdClient::connect(&sock).unwrap();
        let span = 32 << 20;
        let mut big = vec![0u8; MAX_REQUEST_BYTES as usize];
        let mut small = vec![0u8; 4096];
        // Warm up: tables, queues and reply chunks reach their working size.
        for round in 0..3 {
            workload(&mut c, span, round, &mut big, &mut small);
        }
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        for round in 3..13 {
            workload(&mut c, span, round, &mut big, &mut small);
        }
        COUNTING.store(false, Ordering::SeqCst);
    });
    COUNTED.with(|c| c.set(true));
    let served = event_loop::run(&mut engine, frontend, &mut control, &stop, || {
        COUNTED.with(|c| c.set(true))
    });
    COUNTED.with(|c| c.set(false));
    if let Err(panic) = client.join() {
        std::panic::resume_unwind(panic);
    }
    served.unwrap();
    let counted = ALLOCATIONS.load(Ordering::SeqCst);
    // 10 rounds of 48 requests.
    assert_eq!(
        counted, 0,
        "the array and NBD threads allocated {counted} times while serving 480 requests"
    );
}
