#!/usr/bin/env bash
# Bring up the whole directory test bed: Debian packages (only if missing), throwaway PKI, Samba AD DC,
# a second DC joined to it (scripts/samba-dc2-up.sh), OpenLDAP, 389 Directory Server. Servers are (re)built fresh from tests/fixtures/partners.json on every run.
#
#   lab-up.sh [--bulk N] [--reuse-samba] [--no-dc2]
#     --bulk N        also load N generated OpenLDAP accounts under ou=Bulk (openldap-up.sh --bulk N)
#     --reuse-samba   keep an already running, healthy lab DC instead of re-provisioning it (~7 s saved);
#                     the second DC is then started again from its joined state, not joined afresh
#     --no-dc2        no second DC (saves its join, ~1-2 min; tests/failover.rs needs it)
#
# Then: . "${B2BSYNC_LAB:-/tmp/b2bsync-lab}/lab.env"   (see docs/test-bed.md)
# On failure every server is stopped again.
set -euo pipefail
# shellcheck source=scripts/lab-common.sh
. "$(dirname "$0")/lab-common.sh"

ol_args=()
samba_args=()
dc2_args=()
dc2=1
while [ $# -gt 0 ]; do
    case "$1" in
        --bulk) [ $# -ge 2 ] || die "--bulk needs a number"; ol_args+=(--bulk "$2"); shift 2 ;;
        --bulk=*) ol_args+=("$1"); shift ;;
        --reuse-samba) samba_args+=(--reuse); dc2_args+=(--start); shift ;;
        --no-dc2) dc2=0; shift ;;
        *) die "usage: $0 [--bulk N] [--reuse-samba] [--no-dc2]" ;;
    esac
done

t_all=$(lab_now)
trap 'log "lab-up: failed; stopping what was started"; "$LAB_SCRIPTS/lab-down.sh" || true' ERR

install_packages
mkdir -p "$LAB"
chmod 0700 "$LAB"
"$LAB_SCRIPTS/lab-pki.sh"
"$LAB_SCRIPTS/samba-up.sh" "${samba_args[@]}"
# the second DC of the domain on $AD_DC2_ADDR (scripts/samba-dc2-up.sh), joined to the first
[ "$dc2" -eq 0 ] || "$LAB_SCRIPTS/samba-dc2-up.sh" "${dc2_args[@]}"
"$LAB_SCRIPTS/openldap-up.sh" "${ol_args[@]}"
# 389 Directory Server (scripts/389ds-up.sh): its own ports 4389/4636
"$LAB_SCRIPTS/389ds-up.sh"
python3 "$LAB_SCRIPTS/lab-seed.py" accounts --fixture "$LAB_FIXTURE" > "$LAB_ACCOUNTS_JSON"
write_lab_env
trap - ERR
log "lab: up in $(lab_elapsed "$t_all"); . $LAB_ENV_FILE  (accounts with DNs: $LAB_ACCOUNTS_JSON)"
