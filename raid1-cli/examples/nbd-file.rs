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
use raid1_cli::member_io::{EngineConfig, Member};
use raid1_cli::nbd::{ListenAddress, MemberBackend, NbdServer, ServerConfig};

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
