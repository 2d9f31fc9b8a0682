#!/usr/bin/env bash
# Stop the lab directory servers (by PID; 389-ds with dsctl). Idempotent: exits 0 when nothing runs.
# State in $LAB is kept (the next *-up.sh rebuilds it); pass --purge to delete $LAB as well.
set -euo pipefail
# shellcheck source=scripts/lab-common.sh
. "$(dirname "$0")/lab-common.sh"

purge=0
case "${1:-}" in
    --purge) purge=1 ;;
    "") ;;
    *) die "usage: $0 [--purge]" ;;
esac
rc=0
"$LAB_SCRIPTS/samba-dc2-down.sh" || rc=1
"$LAB_SCRIPTS/samba-down.sh" || rc=1
"$LAB_SCRIPTS/openldap-down.sh" || rc=1
# 389 Directory Server: --purge also removes the instance (it lives in /etc/dirsrv and /var/lib/dirsrv)
if [ "$purge" -eq 1 ]; then "$LAB_SCRIPTS/389ds-down.sh" --remove || rc=1; else "$LAB_SCRIPTS/389ds-down.sh" || rc=1; fi
if [ "$purge" -eq 1 ] && [ "$rc" -eq 0 ]; then
    case "$LAB" in /|"") die "refusing to purge LAB='$LAB'" ;; esac
    rm -rf "$LAB"
    log "lab: purged $LAB"
fi
exit "$rc"
