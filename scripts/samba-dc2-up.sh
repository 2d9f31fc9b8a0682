#!/usr/bin/env bash
# A second Samba AD DC of the lab domain, joined to the first (scripts/samba-up.sh) as a replica:
# LDAP 389 + StartTLS, LDAPS 636, its KDC on 88, on $AD_DC2_ADDR (LAB_AD_DC2_ADDR, default
# 127.0.0.2), state in $LAB/samba2. The failover tests (tests/failover.rs) stop and start it.
#
#   samba-dc2-up.sh            stop a running dc2 (if any), join afresh, start, replicate from dc1
#   samba-dc2-up.sh --start    start the already joined dc2 again (after samba-dc2-down.sh)
#
# Needs the first DC running with the services replication uses (rpc, cldap, drepl, kcc; see
# samba-up.sh). Ready when the service account binds over LDAPS to dc2 and dc2 holds the
# partners dc1 was seeded with. Writes $LAB/lab.env (AD_DC2_LDAPS_URL, AD_DC2_SAMBA_CONF).
set -euo pipefail
# shellcheck source=scripts/lab-common.sh
. "$(dirname "$0")/lab-common.sh"

start_only=0
case "${1:-}" in
    --start) start_only=1 ;;
    "") ;;
    *) die "usage: $0 [--start]" ;;
esac
require_tools samba samba-tool ldapsearch

T="$SAMBA2_DIR"
CONF="$T/etc/smb.conf"
PIDFILE="$T/samba.pid"
t_all=$(lab_now)

ldap_bind_ok "$AD_LDAPS_URL" "$AD_ADMIN_BIND" "$AD_ADMIN_PASSWORD" \
    || die "samba-dc2: the first DC does not answer on $AD_LDAPS_URL (run scripts/samba-up.sh first)"

"$LAB_SCRIPTS/samba-dc2-down.sh"
for port in 389 636 3268 88; do
    port_listening "$port" "$AD_DC2_ADDR" && die "samba-dc2: port $port on $AD_DC2_ADDR is in use by another process"
done

# ---- join ------------------------------------------------------------------------
if [ "$start_only" -eq 0 ] || [ ! -f "$CONF" ]; then
    t0=$(lab_now)
    rm -rf "$T"
    mkdir -p "$T/run" "$T/log"
    # A failed join leaves a half-made dc2 account on dc1: remove it first (ignored when absent).
    samba-tool domain demote --remove-other-dead-server="$AD_DC2_HOST" -H "$AD_LDAP_URL" \
        -U "$AD_DOMAIN\\Administrator%$AD_ADMIN_PASSWORD" >"$T/log/demote.log" 2>&1 || true
    KRB5_CONFIG="$LAB_KRB5_CONFIG" samba-tool domain join "$AD_UPN_SUFFIX" DC --server="$AD_ADDR" \
        -U "$AD_DOMAIN\\Administrator%$AD_ADMIN_PASSWORD" --use-kerberos=off --targetdir="$T" --dns-backend=NONE \
        --option="netbios name=${AD_DC2_HOST^^}" \
        --option="interfaces=$AD_DC2_ADDR/8" --option="bind interfaces only=yes" \
        --option="server services=ldap kdc rpc cldap drepl kcc" \
        --option="pid directory=$T/run" --option="ncalrpc dir=$T/run/ncalrpc" \
        --option="winbindd socket directory=$T/run/winbindd" --option="ntp signd socket directory=$T/run/ntp_signd" \
        --option="log file=$T/log/log.%m" --option="ldb:nosync=true" --option="tls enabled=yes" \
        --option="tls keyfile=$PKI/server.key" --option="tls certfile=$PKI/server.crt" --option="tls cafile=$PKI/ca.crt" \
        >"$T/log/join.log" 2>&1 || { tail -n 30 "$T/log/join.log" >&2; die "samba-dc2: join failed"; }
    sed -i 's/^\[global\]$/[global]\n\told password allowed period = 0/' "$CONF"
    grep -q 'old password allowed period = 0' "$CONF" || die "samba-dc2: could not patch $CONF"
    log "samba-dc2: joined $AD_UPN_SUFFIX as $AD_DC2_HOST in $(lab_elapsed "$t0")"
fi

# ---- start -----------------------------------------------------------------------
t0=$(lab_now)
start_samba samba-dc2 "$CONF" "$T/log/samba.stdout" "$PIDFILE" "$AD_DC2_LDAPS_URL" "$AD_SVC_BIND" "$AD_SVC_PASSWORD"
log "samba-dc2: started pid $(cat "$PIDFILE"), LDAPS service bind in $(lab_elapsed "$t0")"

# ---- replication: pull dc1's changes now rather than at drepl's next period ------------
t0=$(lab_now)
samba-tool drs replicate "$AD_DC2_ADDR" "$AD_ADDR" "$AD_BASE_DN" --local -s "$CONF" \
    >"$T/log/replicate.log" 2>&1 || { tail -n 20 "$T/log/replicate.log" >&2; log "samba-dc2: warning: forced replication failed"; }
log "samba-dc2: replicated $AD_BASE_DN from dc1 in $(lab_elapsed "$t0")"
[ "$start_only" -eq 1 ] || write_lab_env
log "samba-dc2: ready on $AD_DC2_LDAPS_URL in $(lab_elapsed "$t_all")"
