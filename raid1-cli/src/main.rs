//! `raid1`: the host command-line tool. One subcommand per verb; each verb's arguments and
//! behaviour live in its own library module.

use clap::{Parser, Subcommand};

use raid1_cli::verbs::{create, ctl, examine, monitor, run, zero};

const EXIT_CODES: &str = "\
Exit status:
  0  every device was handled
  2  error: at least one device could not be handled (each one is named on standard error,
     the others are still handled), or the command line is invalid";

/// Linux md RAID1 (metadata 1.0/1.1/1.2) on the host.
#[derive(Debug, Parser)]
#[command(name = "raid1", version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the md superblock of members, line for line as `mdadm --examine`.
    #[command(short_flag = 'E', after_help = EXIT_CODES)]
    Examine(examine::ExamineArgs),
    /// Print the write-intent bitmap of members, as `mdadm --examine-bitmap`.
    #[command(name = "examine-bitmap", short_flag = 'X', after_help = EXIT_CODES)]
    ExamineBitmap(examine::ExamineBitmapArgs),
    /// Write md RAID1 metadata on members offline, as `mdadm --create` lays it out.
    Create(create::CreateArgs),
    /// Remove md superblocks from members, as `mdadm --zero-superblock`.
    #[command(name = "zero-superblock")]
    ZeroSuperblock(zero::ZeroArgs),
    /// Assemble an array from its members and serve it over NBD (io_uring; an array thread and an
    /// NBD thread).
    #[command(after_help = ctl::EXIT_CODES)]
    Run(run::RunArgs),
    /// Describe a running array, as `mdadm --detail` (with --test, exit 1 when degraded).
    #[command(after_help = ctl::EXIT_CODES)]
    Detail(ctl::DetailArgs),
    /// Every running array, in /proc/mdstat format.
    #[command(after_help = ctl::EXIT_CODES)]
    Status(ctl::StatusArgs),
    /// Stop a running array cleanly (superblocks marked clean).
    #[command(after_help = ctl::EXIT_CODES)]
    Stop(ctl::NameArgs),
    /// Mark a member of a running array faulty.
    #[command(after_help = ctl::EXIT_CODES)]
    Fail(ctl::DeviceArgs),
    /// Remove a faulty or spare member from a running array.
    #[command(after_help = ctl::EXIT_CODES)]
    Remove(ctl::DeviceArgs),
    /// Add a device to a running array (re-added if it was a member, else a spare).
    #[command(after_help = ctl::EXIT_CODES)]
    Add(ctl::DeviceArgs),
    /// Add a device to a running array as a new spare, even a former member that could be
    /// re-added (full recovery).
    #[command(name = "add-spare", after_help = ctl::EXIT_CODES)]
    AddSpare(ctl::DeviceArgs),
    /// Re-add a former member to a running array (bitmap-guided recovery when possible).
    #[command(name = "re-add", after_help = ctl::EXIT_CODES)]
    ReAdd(ctl::DeviceArgs),
    /// Replace a member of a running array: a spare is rebuilt beside it while it stays in
    /// service, then it is marked faulty (mdadm's --replace [--with]).
    #[command(after_help = ctl::EXIT_CODES)]
    Replace(ctl::ReplaceArgs),
    /// Set (or with --off clear) the WriteMostly flag of a running array's member.
    #[command(name = "write-mostly", after_help = ctl::EXIT_CODES)]
    WriteMostly(ctl::WriteMostlyArgs),
    /// Set (or with --off clear) the FailFast flag of a running array's member: an I/O error
    /// then fails it at once unless it is the last working mirror.
    #[command(after_help = ctl::EXIT_CODES)]
    Failfast(ctl::WriteMostlyArgs),
    /// Change the number of mirrors, the bitmap (and its daemon's period), the size or the
    /// write-behind limit of a running array.
    #[command(after_help = ctl::EXIT_CODES)]
    Grow(ctl::GrowArgs),
    /// Start a check (count mismatches) on a running array.
    #[command(after_help = ctl::EXIT_CODES)]
    Check(ctl::NameArgs),
    /// Start a repair (rewrite mismatches) on a running array.
    #[command(after_help = ctl::EXIT_CODES)]
    Repair(ctl::NameArgs),
    /// Freeze, stop or start a running array's sync (md's sync_action: idle, frozen, check,
    /// repair).
    #[command(name = "sync-action", after_help = ctl::EXIT_CODES)]
    SyncAction(ctl::SyncActionArgs),
    /// Change a running array's sync speed limits (md's sync_speed_min / sync_speed_max).
    #[command(name = "sync-speed", after_help = ctl::EXIT_CODES)]
    SyncSpeed(ctl::SyncSpeedArgs),
    /// Limit the next check or repair to a range of sectors (md's sync_min / sync_max); an
    /// interrupted one resumes where it stopped.
    #[command(name = "sync-range", after_help = ctl::EXIT_CODES)]
    SyncRange(ctl::SyncRangeArgs),
    /// Make a running array read-only (mdadm's --readonly): writes fail with EPERM, the array
    /// is marked clean, then nothing is written to its members.
    #[command(after_help = ctl::EXIT_CODES)]
    Readonly(ctl::NameArgs),
    /// Make a read-only array writable again (mdadm's --readwrite).
    #[command(after_help = ctl::EXIT_CODES)]
    Readwrite(ctl::NameArgs),
    /// Wait until resync, recovery or check of a running array is done.
    #[command(after_help = ctl::EXIT_CODES)]
    Wait(ctl::NameArgs),
    /// Print one line per event of the running arrays; alert by program or syslog.
    #[command(after_help = ctl::EXIT_CODES)]
    Monitor(monitor::MonitorArgs),
}

fn main() {
    let cli = Cli::parse();
    let status = match &cli.command {
        Command::Examine(args) => examine::run_examine(args),
        Command::ExamineBitmap(args) => examine::run_examine_bitmap(args),
        Command::Create(args) => create::run_create(args),
        Command::ZeroSuperblock(args) => zero::run_zero_superblock(args),
        Command::Run(args) => run::run_main(args),
        Command::Detail(args) => ctl::detail(args),
        Command::Status(args) => ctl::status(args),
        Command::Stop(args) => ctl::simple("stop", args),
        Command::Fail(args) => ctl::device("fail", args),
        Command::Remove(args) => ctl::device("remove", args),
        Command::Add(args) => ctl::device("add", args),
        Command::ReAdd(args) => ctl::device("re-add", args),
        Command::AddSpare(args) => ctl::device("add-spare", args),
        Command::Replace(args) => ctl::replace(args),
        Command::WriteMostly(args) => ctl::write_mostly(args),
        Command::Failfast(args) => ctl::failfast(args),
        Command::Grow(args) => ctl::grow(args),
        Command::Check(args) => ctl::simple("check", args),
        Command::Repair(args) => ctl::simple("repair", args),
        Command::SyncAction(args) => ctl::sync_action(args),
        Command::SyncRange(args) => ctl::sync_range(args),
        Command::SyncSpeed(args) => ctl::sync_speed(args),
        Command::Readonly(args) => ctl::simple("readonly", args),
        Command::Readwrite(args) => ctl::simple("readwrite", args),
        Command::Wait(args) => ctl::simple("wait", args),
        Command::Monitor(args) => monitor::monitor(args),
    };
    // A report that could not be written is a failure (a closed pipe is not).
    if status == 0 && raid1_cli::text::output_failed() {
        std::process::exit(1);
    }
    std::process::exit(status);
}
