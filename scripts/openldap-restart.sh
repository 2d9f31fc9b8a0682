#!/usr/bin/env bash
# Restart the lab slapd with the same configuration and data (no re-seeding): stop it by its
# PID, start it again, and wait for a real LDAPS bind. Used to test a directory that goes away
# in the middle of a run. LAB_OL_LDAP_PORT / LAB_OL_LDAPS_PORT select a private instance.
#
#   scripts/openldap-restart.sh [--down-for SECONDS]
set -euo pipefail
# shellcheck source=scripts/lab-common.sh
. "$(dirname "$0")/lab-common.sh"

down_for=0
[ "${1:-}" = "--down-for" ] && down_for="${2:-0}"
T="$OL_DIR"
PIDFILE="$T/run/slapd.pid"
[ -d "$T/slapd.d" ] || die "openldap: no instance in $T to restart; run openldap-up.sh first"
"$LAB_SCRIPTS/openldap-down.sh"
sleep "$down_for"
t0=$(lab_now)
nohup slapd -F "$T/slapd.d" -h "$OL_LDAP_URL/ $OL_LDAPS_URL/ $OL_LDAPI_URL" -d 0 \
    >>"$T/log/slapd.log" 2>&1 </dev/null &
echo $! > "$PIDFILE.launch"
deadline=$(( $(date +%s) + 30 ))
until pid_alive "$(cat "$PIDFILE.launch")" && ldap_bind_ok "$OL_LDAPS_URL" "$OL_SVC_DN" "$OL_SVC_PASSWORD"; do
    pid_alive "$(cat "$PIDFILE.launch")" || { tail -n 20 "$T/log/slapd.log" >&2; die "openldap: slapd exited during restart"; }
    [ "$(date +%s)" -lt "$deadline" ] || die "openldap: no LDAPS bind after 30s"
    sleep 0.05
done
mv -f "$PIDFILE.launch" "$PIDFILE"
log "openldap: restarted pid $(cat "$PIDFILE") in $(lab_elapsed "$t0")"
