#!/usr/bin/env bash
# Stop the lab slapd by its PID (SIGTERM, then SIGKILL after LAB_STOP_TIMEOUT s), wait until the process
# is gone and ports 3389/3636 are free. Does nothing (exit 0) when it is not running.
set -euo pipefail
# shellcheck source=scripts/lab-common.sh
. "$(dirname "$0")/lab-common.sh"

pidfile="$OL_DIR/run/slapd.pid"
[ -f "$pidfile" ] || [ ! -f "$pidfile.launch" ] || pidfile="$pidfile.launch"
stop_pid slapd "$pidfile" "$OL_DIR" "$OL_LDAP_PORT" "$OL_LDAPS_PORT"
