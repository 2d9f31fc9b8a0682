#!/usr/bin/env bash
# Samba AD DC for the lab on $AD_ADDR (LAB_AD_ADDR, default 127.0.0.1) (LDAP 389 + StartTLS, LDAPS 636, GC 3268, its KDC on 88),
# state in $LAB/samba.
#
#   samba-up.sh            stop a running lab DC (if any), provision a fresh domain, start, seed, delegate
#   samba-up.sh --reuse    keep an already running lab DC when the service account can bind; else as above
#
# Fresh by default: tests change passwords and mail, so every run starts from the fixture.
# Ready only when a real LDAPS simple bind as the service account succeeds and the KDC listens.
# Writes $LAB/lab.env, $LAB/krb5.conf (kinit against the DC's KDC; LAB_KRB5_CONFIG) and the
# service account's keytab (AD_SVC_KEYTAB, mode 0600) for Kerberos binds.
set -euo pipefail
# shellcheck source=scripts/lab-common.sh
. "$(dirname "$0")/lab-common.sh"

reuse=0
case "${1:-}" in
    --reuse) reuse=1 ;;
    "") ;;
    *) die "usage: $0 [--reuse]" ;;
esac
require_tools samba samba-tool ldapsearch ldapadd ldapmodify ldbsearch iconv python3 kinit

T="$SAMBA_DIR"
CONF="$T/etc/smb.conf"
PIDFILE="$T/samba.pid"
t_all=$(lab_now)

"$LAB_SCRIPTS/lab-pki.sh"

# add_ldap_spn: the DC's service principal ldap/<fqdn>, for Kerberos (GSSAPI) binds. A Windows
# DC registers it itself; Samba's samba_spnupdate would, but this DC runs only ldap and kdc.
add_ldap_spn() {
    local spn="ldap/$AD_DC_FQDN"
    samba-tool spn list "$AD_HOST\$" -H "$T/private/sam.ldb" -s "$CONF" 2>/dev/null | grep -qix "[[:space:]]*$spn" && return 0
    samba-tool spn add "$spn" "$AD_HOST\$" -H "$T/private/sam.ldb" -s "$CONF" >"$T/log/spn.log" 2>&1 \
        || { tail -n 20 "$T/log/spn.log" >&2; die "samba: could not add the SPN $spn"; }
}

# export_svc_keytab: (re)write the keytab of svc-b2bsync from the DC's database, mode 0600.
export_svc_keytab() {
    local tmp="$AD_SVC_KEYTAB.new"
    rm -f "$tmp"
    (umask 077; samba-tool domain exportkeytab "$tmp" --principal="$AD_SVC_SAM@$AD_REALM" -s "$CONF" \
        >"$T/log/keytab.log" 2>&1) || { tail -n 20 "$T/log/keytab.log" >&2; die "samba: keytab export failed"; }
    mv -f "$tmp" "$AD_SVC_KEYTAB"
}

if [ "$reuse" -eq 1 ] && [ -f "$PIDFILE" ] && pid_matches "$(cat "$PIDFILE")" "$T" \
   && ldap_bind_ok "$AD_LDAPS_URL" "$AD_SVC_BIND" "$AD_SVC_PASSWORD" && port_listening 88 "$AD_ADDR"; then
    add_ldap_spn
    export_svc_keytab
    write_krb5_conf
    write_lab_env
    log "samba: reusing running DC pid $(cat "$PIDFILE") ($(lab_elapsed "$t_all"))"
    exit 0
fi

"$LAB_SCRIPTS/samba-down.sh"
for port in 389 636 3268 88; do
    port_listening "$port" "$AD_ADDR" && die "samba: port $port on $AD_ADDR is in use by another process (system slapd/samba?)"
done

# ---- provision ---------------------------------------------------------------
t0=$(lab_now)
rm -rf "$T"
mkdir -p "$T/run" "$T/log"
samba-tool domain provision --targetdir="$T" --realm="$AD_REALM" --domain="$AD_DOMAIN" --server-role=dc \
    --dns-backend=NONE --use-rfc2307 --host-name="$AD_HOST" --adminpass="$AD_ADMIN_PASSWORD" \
    --option="interfaces=$AD_ADDR/8" --option="bind interfaces only=yes" \
    --option="server services=ldap kdc rpc cldap drepl kcc" \
    --option="pid directory=$T/run" --option="ncalrpc dir=$T/run/ncalrpc" \
    --option="winbindd socket directory=$T/run/winbindd" --option="ntp signd socket directory=$T/run/ntp_signd" \
    --option="log file=$T/log/log.%m" --option="ldb:nosync=true" --option="tls enabled=yes" \
    --option="tls keyfile=$PKI/server.key" --option="tls certfile=$PKI/server.crt" --option="tls cafile=$PKI/ca.crt" \
    >"$T/log/provision.log" 2>&1 || { tail -n 30 "$T/log/provision.log" >&2; die "samba: provision failed"; }
# provision silently drops this option; without it an old password keeps binding for 60 minutes
sed -i 's/^\[global\]$/[global]\n\told password allowed period = 0/' "$CONF"
grep -q 'old password allowed period = 0' "$CONF" || die "samba: could not patch $CONF"
# Kerberos (GSSAPI) binds over LDAPS without a SASL sign/seal layer, as a Windows DC accepts
# them (the TLS channel carries the protection); Samba's default refuses them ("Sign or Seal
# are required"). Simple binds still need TLS, and cleartext SASL still needs sign/seal.
sed -i 's/^\[global\]$/[global]\n\tldap server require strong auth = allow_sasl_over_tls/' "$CONF"
grep -q 'ldap server require strong auth = allow_sasl_over_tls' "$CONF" || die "samba: could not patch $CONF"
log "samba: provisioned in $(lab_elapsed "$t0")"

# ---- Exchange's recipient attributes (issue 14): the attributes first, then the class that
# allows them, each in its own ldbmodify (one transaction cannot use what it adds)
t0=$(lab_now)
SCHEMA_DN="CN=Schema,CN=Configuration,$AD_BASE_DN"
sed "s/\${SCHEMA_DN}/$SCHEMA_DN/g" "$LAB_SCRIPTS/samba-exchange-schema.ldif" > "$T/exchange-schema.ldif"
awk '/^dn: CN=Mail-Recipient/{exit} {print}' "$T/exchange-schema.ldif" > "$T/exchange-schema-1.ldif"
awk 'f||/^dn: CN=Mail-Recipient/{f=1; print}' "$T/exchange-schema.ldif" > "$T/exchange-schema-2.ldif"
for part in 1 2; do
    ldbmodify -H "$T/private/sam.ldb" --configfile="$CONF" --option="dsdb:schema update allowed=true" \
        "$T/exchange-schema-$part.ldif" >>"$T/log/exchange-schema.log" 2>&1 \
        || { tail -n 20 "$T/log/exchange-schema.log" >&2; die "samba: the Exchange schema extension failed"; }
done
log "samba: Exchange recipient attributes added to the schema in $(lab_elapsed "$t0")"

# ---- start -------------------------------------------------------------------
t0=$(lab_now)
: >"$T/log/samba.stdout"
start_samba samba "$CONF" "$T/log/samba.stdout" "$PIDFILE" "$AD_LDAPS_URL" "$AD_ADMIN_BIND" "$AD_ADMIN_PASSWORD"
log "samba: started pid $(cat "$PIDFILE"), LDAPS admin bind in $(lab_elapsed "$t0")"

# ---- seed ----------------------------------------------------------------------
t0=$(lab_now)
python3 "$LAB_SCRIPTS/lab-seed.py" ad-ldif --fixture "$LAB_FIXTURE" > "$T/seed.ldif"
chmod 0600 "$T/seed.ldif"
LDAPTLS_CACERT="$LAB_CA" ldapadd -x -H "$AD_LDAPS_URL" -D "$AD_ADMIN_BIND" -w "$AD_ADMIN_PASSWORD" \
    -f "$T/seed.ldif" >"$T/log/seed.log" 2>&1 || { tail -n 20 "$T/log/seed.log" >&2; die "samba: seeding failed"; }
n=$(grep -c '^adding new entry' "$T/log/seed.log" || true)
log "samba: seeded $n entries in $(lab_elapsed "$t0")"

# ---- delegation: svc-b2bsync may reset passwords and write mail on user objects in OU=Partners only
t0=$(lab_now)
svc_sid=$(ldbsearch -H "$T/private/sam.ldb" --configfile="$CONF" -b "$AD_BASE_DN" "(sAMAccountName=$AD_SVC_SAM)" objectSid 2>/dev/null \
          | sed -n 's/^objectSid: //p')
[[ "$svc_sid" == S-1-5-21-* ]] || die "samba: could not read the SID of $AD_SVC_SAM"
RESET_PASSWORD=00299570-246d-11d0-a768-00aa006e0529   # User-Force-Change-Password (control access right)
ATTR_MAIL=bf967961-0de6-11d0-a285-00aa003049e2        # E-mail-Addresses (mail)
CLASS_USER=bf967aba-0de6-11d0-a285-00aa003049e2       # user
samba-tool dsacl set -H "$T/private/sam.ldb" -s "$CONF" --objectdn="$AD_PARTNERS_DN" \
    --sddl="(OA;CI;CR;$RESET_PASSWORD;$CLASS_USER;$svc_sid)(OA;CI;WP;$ATTR_MAIL;$CLASS_USER;$svc_sid)" \
    >"$T/log/dsacl.log" 2>&1 || { tail -n 20 "$T/log/dsacl.log" >&2; die "samba: dsacl set failed"; }
log "samba: delegated reset-password + write mail on $AD_PARTNERS_DN to $AD_SVC_SAM ($svc_sid) in $(lab_elapsed "$t0")"

# ---- svc-b2bsync may list Deleted Objects (List Contents, Read Property), as only
# administrators may by default: incremental runs see deletions (issue 14)
DELETED_DN="CN=Deleted Objects,$AD_BASE_DN"
sd=$(ldbsearch -H "$T/private/sam.ldb" --configfile="$CONF" --show-deleted -b "$DELETED_DN" -s base nTSecurityDescriptor 2>/dev/null \
     | sed -e ':a' -e 'N' -e '$!ba' -e 's/\n //g' | sed -n 's/^nTSecurityDescriptor: //p')
[[ "$sd" == *"D:"* ]] || die "samba: could not read the security descriptor of $DELETED_DN"
printf 'dn: %s\nchangetype: modify\nreplace: nTSecurityDescriptor\nnTSecurityDescriptor: %s\n' "$DELETED_DN" \
    "$(printf '%s' "$sd" | sed -E "s/(D:[A-Z]*)/\1(A;;RPLC;;;$svc_sid)/")" \
    | ldbmodify -H "$T/private/sam.ldb" --configfile="$CONF" --show-deleted >"$T/log/deleted-acl.log" 2>&1 \
    || { tail -n 20 "$T/log/deleted-acl.log" >&2; die "samba: could not let $AD_SVC_SAM list $DELETED_DN"; }
log "samba: $AD_SVC_SAM may list $DELETED_DN"

# ---- ready -----------------------------------------------------------------------
wait_for ldap_bind_ok "$AD_LDAPS_URL" "$AD_SVC_BIND" "$AD_SVC_PASSWORD" || die "samba: service account cannot bind over LDAPS"
wait_for port_listening 88 "$AD_ADDR" || die "samba: its KDC does not listen on $AD_ADDR:88"
t0=$(lab_now)
add_ldap_spn
export_svc_keytab
log "samba: added the SPN ldap/$AD_DC_FQDN, exported the keytab of $AD_SVC_SAM to $AD_SVC_KEYTAB in $(lab_elapsed "$t0")"
write_krb5_conf
write_lab_env
log "samba: ready on $AD_LDAPS_URL and $AD_LDAP_URL (StartTLS) in $(lab_elapsed "$t_all"); env: $LAB_ENV_FILE"
