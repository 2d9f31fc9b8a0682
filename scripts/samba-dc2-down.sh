#!/usr/bin/env bash
# Stop the lab's second Samba AD DC (scripts/samba-dc2-up.sh) by its PID, wait until its ports on
# $AD_DC2_ADDR are free. Does nothing (exit 0) when it is not running; its joined state stays in
# $LAB/samba2 (samba-dc2-up.sh --start starts it again).
set -euo pipefail
# shellcheck source=scripts/lab-common.sh
. "$(dirname "$0")/lab-common.sh"

pidfile="$SAMBA2_DIR/samba.pid"
[ -f "$pidfile" ] || [ ! -f "$SAMBA2_DIR/run/samba.pid" ] || pidfile="$SAMBA2_DIR/run/samba.pid"
STOP_ADDR="$AD_DC2_ADDR" stop_pid samba-dc2 "$pidfile" "$SAMBA2_DIR" 636 389 3268
