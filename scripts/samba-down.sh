#!/usr/bin/env bash
# Stop the lab Samba AD DC by its PID (SIGTERM, then SIGKILL after LAB_STOP_TIMEOUT s), wait until the
# process is gone and ports 389/636/3268 are free. Does nothing (exit 0) when it is not running.
set -euo pipefail
# shellcheck source=scripts/lab-common.sh
. "$(dirname "$0")/lab-common.sh"

pidfile="$SAMBA_DIR/samba.pid"
# fall back on Samba's own pidfile if ours is gone
[ -f "$pidfile" ] || [ ! -f "$SAMBA_DIR/run/samba.pid" ] || pidfile="$SAMBA_DIR/run/samba.pid"
STOP_ADDR="$AD_ADDR" stop_pid samba "$pidfile" "$SAMBA_DIR" 636 389 3268
