//! The `b2bsync` command: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    match b2bsync::cli::Cli::try_parse() {
        Ok(cli) => b2bsync::cli::run(cli),
        Err(e) => {
            use clap::error::ErrorKind;
            // --help and --version are answers, not errors.
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return std::process::ExitCode::SUCCESS;
            }
            // A usage error is an invalid invocation (exit 3), never clap's own 2, which
            // schedulers would read as "finished, some actions failed".
            let _ = e.print();
            eprintln!(
                "help: `b2bsync --help` lists the commands; `b2bsync help <command>` shows each one's options and examples"
            );
            b2bsync::cli::Exit::InvalidConfig.into()
        }
    }
}
