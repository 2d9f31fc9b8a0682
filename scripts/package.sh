#!/usr/bin/env bash
# Builds the Debian package of b2bsync: the release binary, its man pages and shell
# completions (generated from the clap definition by examples/package_assets.rs), the
# packaged config, mappings and systemd units (packaging/debian/), with cargo-deb.
#
#   scripts/package.sh        prints the path of the .deb it wrote (target/debian/)
#
# cargo-deb is installed from crates.io when missing (a pinned version).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
CARGO_DEB_VERSION=3.8.0

if ! cargo deb --version >/dev/null 2>&1; then
  echo "package: installing cargo-deb $CARGO_DEB_VERSION" >&2
  cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION" >&2
fi

echo "package: building the release binary" >&2
cargo build --locked --release -p b2bsync --bin b2bsync >&2

echo "package: man pages and shell completions from the CLI definition" >&2
assets=target/package-assets
rm -rf "$assets"
cargo run --locked --release --quiet -p b2bsync --example package_assets -- "$assets" >&2
gzip -9n "$assets"/man/*.1

echo "package: cargo deb" >&2
cargo deb -p b2bsync --locked --no-build --quiet --output target/debian/ >&2
ls -t target/debian/b2bsync_*.deb | head -1
