#!/usr/bin/env bash
# Builds the Debian package of b2bsync: the release binary, its man pages and shell
# completions (generated from the clap definition by examples/package_assets.rs), the
# packaged config, mappings and systemd units (packaging/debian/), with cargo-deb.
#
#   scripts/package.sh        prints the path of the .deb it wrote (target/debian/)
#
#   PACKAGE_PROFILE=dev scripts/package.sh
#       the same package around the debug build that `cargo build` already made, with faster
#       compression: what scripts/test-package.sh checks (the files, modes, units and the
#       installed binary's behaviour do not depend on the profile; the release build alone
#       takes minutes). Ship the default (release) build.
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

profile=${PACKAGE_PROFILE:-release}
deb_args=()
case "$profile" in
  release) ;;
  dev) deb_args+=(--fast) ;;
  *) echo "package: PACKAGE_PROFILE must be release or dev, not $profile" >&2; exit 1 ;;
esac

echo "package: building the $profile binary" >&2
cargo build --locked --profile "$profile" -p b2bsync --bin b2bsync >&2

echo "package: man pages and shell completions from the CLI definition" >&2
assets=target/package-assets
rm -rf "$assets"
cargo run --locked --profile "$profile" --quiet -p b2bsync --example package_assets -- "$assets" >&2
gzip -9n "$assets"/man/*.1

echo "package: cargo deb ($profile)" >&2
cargo deb -p b2bsync --locked --no-build --quiet --profile "$profile" "${deb_args[@]}" --output target/debian/ >&2
ls -t target/debian/b2bsync_*.deb | head -1
