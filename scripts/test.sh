#!/usr/bin/env bash
# The one test command (README, CI): installs and starts everything the tests need on this
# machine (Samba AD DC, OpenLDAP, the Graph emulator's Python clients), runs every test, and
# stops everything again even when a test fails. A missing server is a failure, never a skip.
#
#   scripts/test.sh            everything
#   scripts/test.sh -- ARGS    extra arguments for `cargo nextest run` (e.g. a test filter)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
export B2BSYNC_LAB=${B2BSYNC_LAB:-/tmp/b2bsync-lab}
export OL_BULK_COUNT=${OL_BULK_COUNT:-2500}
extra=()
if [ "${1:-}" = "--" ]; then shift; extra=("$@"); fi

started=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

cleanup() {
  local rc=$?
  step "stopping the lab"
  "$here/lab-down.sh" || true
  exit "$rc"
}
trap cleanup EXIT INT TERM

step "build dependencies (libkrb5-dev, libclang-dev for the Kerberos bind; installed when missing)"
"$here/install-build-deps.sh"

step "building b2bsync and graph-emulator"
cargo build --locked --workspace --all-targets

step "headless Chromium for tests/report_html.rs (installed when missing)"
"$here/install-chromium.sh"

step "starting the directory lab (Samba AD DC with its KDC, OpenLDAP with $OL_BULK_COUNT bulk accounts, 389 Directory Server)"
"$here/lab-up.sh" --bulk "$OL_BULK_COUNT"
# shellcheck disable=SC1091
source "$B2BSYNC_LAB/lab.env"

failed=0
step "Rust tests: unit, emulator contract, directory, lifecycle"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast "${extra[@]}" || failed=1
else
  cargo test --locked --workspace --no-fail-fast "${extra[@]}" || failed=1
fi

if [ ${#extra[@]} -eq 0 ]; then
  step "Microsoft's Python clients (msgraph-sdk, azure-identity, msal) against the emulator"
  "$here/test-python-clients.sh" || failed=1
  step "Microsoft's JavaScript clients (msal-node, @azure/identity, microsoft-graph-client) against the emulator"
  "$here/test-node-clients.sh" || failed=1
fi

if [ ${#extra[@]} -eq 0 ]; then
  step "the Debian package: build, dpkg -i, check and run as the b2bsync user, systemd-analyze, dpkg -P"
  "$here/test-package.sh" || failed=1
fi

if [ ${#extra[@]} -eq 0 ]; then
  step "the README's first command, end to end: scripts/demo.sh"
  if "$here/demo.sh" >"$B2BSYNC_LAB/demo.out" 2>&1 \
     && python3 "$here/demo-check.py" "$B2BSYNC_LAB/demo.out" "$B2BSYNC_LAB/demo/status.html"; then
    echo "demo: every eligible partner done, old passwords refused, blocked ones untouched"
  else
    tail -40 "$B2BSYNC_LAB/demo.out"
    failed=1
  fi
fi

step "done: $([ $failed = 0 ] && echo 'all suites passed' || echo 'SOME SUITES FAILED')"
exit $failed
