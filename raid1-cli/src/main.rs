//! `raid1`: the host command-line tool. One subcommand per verb; each verb's arguments and
//! behaviour live in its own library module.

use clap::{Parser, Subcommand};

use raid1_cli::examine;

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
}

fn main() {
    let cli = Cli::parse();
    let status = match &cli.command {
        Command::Examine(args) => examine::run_examine(args),
        Command::ExamineBitmap(args) => examine::run_examine_bitmap(args),
    };
    std::process::exit(status);
}
