//! The `b2bsync` command: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    b2bsync::cli::run(b2bsync::cli::Cli::parse())
}
