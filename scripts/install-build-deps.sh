#!/usr/bin/env bash
# Installs the Debian packages that building b2bsync needs beyond the Rust toolchain and gcc,
# only when one is missing: the Kerberos (GSSAPI) bind of the default `gssapi` cargo feature
# links MIT krb5's libgssapi_krb5 and generates its bindings with bindgen (libclang).
# Needs root and the Debian package mirrors when something is missing.
#
#   scripts/install-build-deps.sh      install what is missing, else say all is present
#
# Without them, `cargo build --no-default-features` builds b2bsync without Kerberos.
set -euo pipefail
# shellcheck source=scripts/lab-common.sh
. "$(dirname "$0")/lab-common.sh"

apt_install libkrb5-dev libclang-dev pkg-config || true
