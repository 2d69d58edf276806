//! Test server: exports one image file or block device over NBD, with the io_uring member engine as the
//! backend. Used by the benchmarks in docs/NBD.md and for trying clients by hand:
//!
//! ```text
//! cargo run --release --example nbd-file -- --file disk.img --listen unix:nbd.sock --listen tcp:127.0.0.1:10809
//! qemu-io -f raw 'nbd+unix:///?socket=nbd.sock' -c 'write -P 0xab 0 64k' -c 'read -P 0xab 0 64k'
//! ```
//!
//! Stops on SIGINT or SIGTERM.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use raid1_cli::member_io::export::MemberBackend;
use raid1_cli::member_io::{EngineConfig, Member};
use raid1_cli::nbd::{ListenAddress, NbdServer, ServerConfig};

/// Export a file or block device over NBD.
#[derive(Parser, Debug)]
struct Args {
    /// Image file or block device to export (opened O_DIRECT, exclusively).
    #[arg(long)]
    file: PathBuf,
    /// `unix:PATH` or `tcp:127.0.0.1:PORT`; may be repeated.
    #[arg(long, required = true)]
    listen: Vec<ListenAddress>,
    /// Export name (the default export, "", is always accepted).
    #[arg(long, default_value = "")]
    name: String,
    /// io_uring submission queue depth.
    #[arg(long, default_value_t = 256)]
    queue_depth: u32,
    /// Do not register the buffer pool with the kernel.
    #[arg(long)]
    no_fixed_buffers: bool,
    /// Pin the event loop and the ring's io-wq workers to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() {
    let args = Args::parse();
    if let Err(e) = serve(&args) {
        eprintln!("nbd-file: {e}");
        std::process::exit(1);
    }
}

fn serve(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let member = Member::open(&args.file)?;
    eprintln!(
        "nbd-file: {} ({:?}, {} bytes, logical block {} bytes)",
        member.path().display(),
        member.kind(),
        member.size(),
        member.logical_block_size()
    );
    let config = EngineConfig {
        queue_depth: args.queue_depth,
        register_buffers: !args.no_fixed_buffers,
        ..Default::default()
    };
    let backend = MemberBackend::new(member, config)?;
    if let Some(cpu) = args.cpu {
        // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it (the range is checked by pin_workers).
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        backend.engine().pin_workers(&[cpu])?;
        // SAFETY: pin_workers checked cpu < CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: sched_setaffinity reads the set we pass, for the calling thread (pid 0).
        if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0
        {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    let mut server = NbdServer::new(
        backend,
        ServerConfig {
            export_name: args.name.clone(),
            ..Default::default()
        },
    );
    for address in &args.listen {
        let bound = server.listen(address)?;
        eprintln!("nbd-file: listening on {bound:?}");
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    server.run(&STOP)?;
    eprintln!(
        "nbd-file: stopped ({} connections served)",
        server.accepted_count()
    );
    Ok(())
}
