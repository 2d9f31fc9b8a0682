//! Writes the man pages and shell completions of `b2bsync` from its clap definition, for the
//! Debian package (`scripts/package.sh`): `OUT/man/b2bsync.1` and one page per command
//! (`b2bsync-run.1`, ...), and `OUT/completions/` for bash, zsh and fish.
//!
//!     cargo run --release --example package_assets -- target/package-assets
//!
//! An example, not part of the binary: clap_mangen and clap_complete are dev-dependencies, so
//! the installed program carries neither.

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: package_assets OUT_DIR")?;
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    // One page for b2bsync and one per command; generate_to builds the command itself
    // (building it first would add pages for clap's `help` pseudo-command).
    clap_mangen::generate_to(b2bsync::cli::Cli::command(), &man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = b2bsync::cli::Cli::command();
        let path = clap_complete::generate_to(shell, &mut cmd, "b2bsync", &completions)?;
        println!("{}", path.display());
    }
    for entry in std::fs::read_dir(&man)? {
        println!("{}", entry?.path().display());
    }
    Ok(())
}
