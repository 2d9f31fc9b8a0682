//! The `graph-emulator` command: serves the Graph emulator over HTTPS.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
