#!/usr/bin/env bash
# Stop the lab's 389 Directory Server instance (dsctl stop: SIGTERM by its pidfile, waits) and wait
# until ports 4389/4636 are free. Does nothing (exit 0) when it is not running.
#
#   389ds-down.sh [--remove]   --remove also deletes the instance (dsctl remove), as 389ds-up.sh does
set -euo pipefail
# shellcheck source=scripts/lab-common.sh
. "$(dirname "$0")/lab-common.sh"

remove=0
case "${1:-}" in
    --remove) remove=1 ;;
    "") ;;
    *) die "usage: $0 [--remove]" ;;
esac
if [ ! -d "/etc/dirsrv/slapd-$DS_INSTANCE" ] || ! command -v dsctl >/dev/null 2>&1; then
    log "389-ds: not running (no instance $DS_INSTANCE)"
    exit 0
fi
PREFIX="$(ds_prefix)"
export PREFIX
t0=$(lab_now)
if [ "$remove" -eq 1 ]; then
    dsctl "$DS_INSTANCE" remove --do-it >/dev/null 2>&1 || die "389-ds: dsctl remove failed"
    what="removed"
else
    dsctl "$DS_INSTANCE" stop >/dev/null 2>&1 || die "389-ds: dsctl stop failed"
    what="stopped"
fi
for port in "$DS_LDAP_PORT" "$DS_LDAPS_PORT"; do
    deadline=$(( $(date +%s) + 10 ))
    while port_listening "$port"; do
        [ "$(date +%s)" -lt "$deadline" ] || { log "389-ds: warning: port $port still in use"; break; }
        sleep 0.1
    done
done
log "389-ds: $what instance $DS_INSTANCE in $(lab_elapsed "$t0")"
