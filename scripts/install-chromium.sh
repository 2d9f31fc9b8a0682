#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium when it is missing (tests/report_html.rs opens
# the `status --html` page in it). Needs root (or sudo) and the Debian package mirrors.
#
#   scripts/install-chromium.sh        install if missing, then print the version
set -euo pipefail

find_chromium() {
  for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null 2>&1; then
      command -v "$name"
      return 0
    fi
  done
  return 1
}

if path=$(find_chromium); then
  echo "chromium present: $path ($("$path" --version 2>/dev/null || echo 'version unknown'))"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "error: chromium is missing and this script needs root (or sudo) to install it" >&2
  echo "help: run as root: apt-get update && apt-get install -y chromium" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# apt's temp dir in /tmp has been seen to vanish mid-install on these machines: a private one.
TMPDIR="$(mktemp -d /var/tmp/b2bsync-apt.XXXXXX)"
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
"${as_root[@]}" apt-get update -q
# fonts-dejavu-core: the page needs at least one font for the screenshot to show text.
"${as_root[@]}" apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core

path=$(find_chromium) || { echo "error: chromium still missing after apt-get install" >&2; exit 1; }
echo "chromium installed: $path ($("$path" --version 2>/dev/null || echo 'version unknown'))"
