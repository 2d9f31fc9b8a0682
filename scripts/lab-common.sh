#!/usr/bin/env bash
# Shared variables and helpers for the b2bsync directory test bed.
# Sourced by lab-*.sh, samba-*.sh and openldap-*.sh; not meant to be run.
# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this file

# ---- locations -------------------------------------------------------------
LAB="${B2BSYNC_LAB:-/tmp/b2bsync-lab}"
LAB_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LAB_REPO="$(cd "$LAB_SCRIPTS/.." && pwd)"
LAB_FIXTURE="${LAB_FIXTURE:-$LAB_REPO/tests/fixtures/partners.json}"
PKI="$LAB/pki"
SAMBA_DIR="$LAB/samba"
SAMBA2_DIR="$LAB/samba2"      # the second DC (scripts/samba-dc2-up.sh)
OL_DIR="$LAB/openldap"
DS_DIR="$LAB/389ds"
LAB_ENV_FILE="$LAB/lab.env"

# ---- throwaway lab credentials (override through the environment) ----------
: "${LAB_PARTNER_PASSWORD:=Partner-Init-2026!}"
: "${LAB_SVC_PASSWORD:=Svc-B2b-2026!x}"
: "${LAB_AD_ADMIN_PASSWORD:=Adm-Lab-2026!x}"
: "${LAB_OL_ADMIN_PASSWORD:=Ol-Admin-2026!}"
export LAB_PARTNER_PASSWORD LAB_SVC_PASSWORD LAB_AD_ADMIN_PASSWORD LAB_OL_ADMIN_PASSWORD

# ---- directory constants ------------------------------------------------------
AD_REALM="LAB.EXAMPLE.COM"
AD_DOMAIN="LAB"
AD_HOST="dc1"
AD_BASE_DN="DC=lab,DC=example,DC=com"
AD_PARTNERS_DN="OU=Partners,$AD_BASE_DN"
AD_UPN_SUFFIX="lab.example.com"
AD_ADMIN_BIND="Administrator@$AD_UPN_SUFFIX"
AD_SVC_SAM="svc-b2bsync"
AD_SVC_BIND="$AD_SVC_SAM@$AD_UPN_SUFFIX"
AD_SVC_DN="CN=$AD_SVC_SAM,CN=Users,$AD_BASE_DN"
# The DCs' loopback addresses: a private lab (own B2BSYNC_LAB) picks others, e.g. 127.0.0.3/127.0.0.4.
AD_ADDR="${LAB_AD_ADDR:-127.0.0.1}"
AD_DC2_ADDR="${LAB_AD_DC2_ADDR:-127.0.0.2}"
AD_DC2_HOST="dc2"
AD_LDAPS_URL="ldaps://$AD_ADDR:636"
AD_LDAP_URL="ldap://$AD_ADDR:389"
AD_DC2_LDAPS_URL="ldaps://$AD_DC2_ADDR:636"
AD_DC2_LDAP_URL="ldap://$AD_DC2_ADDR:389"
AD_DC2_SAMBA_CONF="$SAMBA2_DIR/etc/smb.conf"
AD_MAX_RUNTIME="${LAB_AD_MAX_RUNTIME:-14400}"

OL_BASE_DN="dc=lab,dc=example,dc=com"
OL_PARTNERS_DN="ou=Partners,$OL_BASE_DN"
OL_ADMIN_DN="cn=admin,$OL_BASE_DN"
OL_SVC_DN="cn=svc-b2bsync,ou=Service,$OL_BASE_DN"
OL_LDAP_PORT="${LAB_OL_LDAP_PORT:-3389}"
OL_LDAPS_PORT="${LAB_OL_LDAPS_PORT:-3636}"
OL_LDAPS_URL="ldaps://127.0.0.1:$OL_LDAPS_PORT"
OL_LDAP_URL="ldap://127.0.0.1:$OL_LDAP_PORT"
OL_LDAPI_URL="ldapi://${OL_DIR//\//%2F}%2Frun%2Fldapi"   # SASL EXTERNAL as root = cn=config rootdn

# ---- 389 Directory Server (scripts/389ds-*.sh) -----------------------------------------
# The instance's own files live where dscreate puts them (/etc/dirsrv/slapd-NAME, /var/lib/dirsrv/...);
# $DS_DIR holds the defaults file that turns systemd off and the generated set-up files.
: "${LAB_DS_ADMIN_PASSWORD:=Ds-Admin-2026!x}"
export LAB_DS_ADMIN_PASSWORD
DS_INSTANCE="${LAB_DS_INSTANCE:-b2bsync-lab}"
DS_BASE_DN="dc=lab,dc=example,dc=com"
DS_PARTNERS_DN="ou=Partners,$DS_BASE_DN"
DS_ADMIN_DN="cn=Directory Manager"
DS_SVC_DN="cn=svc-b2bsync,ou=Service,$DS_BASE_DN"
DS_PROTECTED_GROUP_DN="cn=Protected Partners,ou=Groups,$DS_BASE_DN"
DS_LDAP_PORT="${LAB_DS_LDAP_PORT:-4389}"
DS_LDAPS_PORT="${LAB_DS_LDAPS_PORT:-4636}"
DS_LDAPS_URL="ldaps://127.0.0.1:$DS_LDAPS_PORT"
DS_LDAP_URL="ldap://127.0.0.1:$DS_LDAP_PORT"
DS_LDAPI_URL="ldapi://%2Frun%2Fslapd-$DS_INSTANCE.socket"   # SASL EXTERNAL as root = cn=Directory Manager
DS_PACKAGES=(389-ds-base)
# dsctl/dscreate read their defaults through $PREFIX; ours says with_systemd = 0 (no systemd here).
ds_prefix() {
    local p="$DS_DIR/prefix"
    if [ ! -s "$p/share/dirsrv/inf/defaults.inf" ]; then
        mkdir -p "$p/share/dirsrv/inf"
        sed 's/^with_systemd = 1$/with_systemd = 0/' /usr/share/dirsrv/inf/defaults.inf > "$p/share/dirsrv/inf/defaults.inf"
    fi
    printf '%s' "$p"
}

LAB_PACKAGES=(samba-ad-dc samba-ad-provision samba-dsdb-modules samba-vfs-modules
              winbind ldb-tools ldap-utils slapd krb5-user "${DS_PACKAGES[@]}")

# ---- output / timing ------------------------------------------------------------
lab_now() { date +%s.%N; }
# lab_elapsed START -> "1.23s"
lab_elapsed() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1fs", e - s }'; }
log() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---- packages -------------------------------------------------------------------
# apt_install PACKAGE...: installs those of the Debian packages that are missing (needs root).
# Returns 1 when nothing was missing.
apt_install() {
    local missing=() p t0 apt_tmp created_policy=0
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "install: all packages present"
        return 1
    fi
    [ "$(id -u)" -eq 0 ] || die "install: need root to install: ${missing[*]}"
    t0=$(lab_now)
    # Never let a postinst start system daemons (slapd would take :389 from Samba).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    # apt's temp dir in /tmp has been seen to vanish mid-install here: use a private one.
    apt_tmp="$(mktemp -d /var/tmp/b2bsync-apt.XXXXXX)"
    log "install: missing ${missing[*]}"
    if [ -z "${LAB_APT_UPDATED:-}" ]; then
        TMPDIR="$apt_tmp" apt-get update -qq
        LAB_APT_UPDATED=1
    fi
    TMPDIR="$apt_tmp" DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >"$apt_tmp/install.log" 2>&1 || { cat "$apt_tmp/install.log" >&2; die "install: apt-get install failed"; }
    rm -rf "$apt_tmp"
    [ "$created_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    log "install: ${#missing[@]} missing package(s) installed in $(lab_elapsed "$t0")"
}

# Installs the Debian packages the lab needs, only when one is missing.
install_packages() {
    apt_install "${LAB_PACKAGES[@]}" || return 0
    # On a systemd host the packages may still have started daemons: stop them if so.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl stop slapd smbd nmbd samba-ad-dc 2>/dev/null || true
    fi
}

require_tools() {
    local t
    for t in "$@"; do command -v "$t" >/dev/null 2>&1 || die "missing tool '$t' (run scripts/lab-up.sh, which installs packages)"; done
}

# ---- processes / ports -------------------------------------------------------------
pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# port_listening PORT [ADDR]: true when something listens on PORT (TCP); with ADDR (an IPv4 address),
# only when it listens on ADDR or on every address (0.0.0.0).
port_listening() {
    local hex
    hex=$(printf '%04X' "$1")
    if [ -n "${2:-}" ]; then
        local a b c d ip
        IFS=. read -r a b c d <<< "$2"
        ip=$(printf '%02X%02X%02X%02X' "$d" "$c" "$b" "$a")   # /proc/net/tcp: little-endian
        awk -v a="$ip:$hex" -v any="00000000:$hex" 'NR > 1 && $4 == "0A" && ($2 == a || $2 == any) { f = 1 } END { exit !f }' \
            /proc/net/tcp
        return
    fi
    # state 0A = LISTEN; local address column 2
    awk -v h=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }' \
        /proc/net/tcp /proc/net/tcp6
}

# wait_for CMD... : retry CMD until it succeeds or LAB_WAIT_TIMEOUT (s) passes.
wait_for() {
    local deadline=$(( $(date +%s) + ${LAB_WAIT_TIMEOUT:-60} ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# pid_matches PID DIR: the process belongs to the lab instance in DIR (guards against a recycled
# PID): its command line mentions DIR, or it holds a file under DIR open (Samba rewrites its
# process title to "samba: root process", so the command line alone is not enough).
pid_matches() {
    local pid=$1 dir=$2 fd
    pid_alive "$pid" || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir" && return 0
    for fd in /proc/"$pid"/fd/*; do
        case "$(readlink "$fd" 2>/dev/null)" in "$dir"/*) return 0 ;; esac
    done
    return 1
}

# stop_pid NAME PIDFILE DIR [PORT...]: SIGTERM the pid from PIDFILE (only if it belongs to the
# instance in DIR, see pid_matches), wait for it to exit and for each PORT to be free; SIGKILL after
# LAB_STOP_TIMEOUT seconds. Never fails when nothing runs. With STOP_ADDR set, the ports are only
# waited for on that address (two DCs use the same ports on different addresses).
stop_pid() {
    local name=$1 pidfile=$2 needle=$3 pid t0 deadline port
    shift 3
    t0=$(lab_now)
    pid=""
    [ -f "$pidfile" ] && pid=$(tr -dc '0-9' < "$pidfile")
    if ! pid_matches "$pid" "$needle"; then
        log "$name: not running"
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(( $(date +%s) + ${LAB_STOP_TIMEOUT:-20} ))
    while pid_alive "$pid"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "$name: pid $pid still alive after ${LAB_STOP_TIMEOUT:-20}s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.1
    done
    for port in "$@"; do
        deadline=$(( $(date +%s) + 10 ))
        while port_listening "$port" "${STOP_ADDR:-}"; do
            [ "$(date +%s)" -lt "$deadline" ] || { log "$name: warning: port $port still in use"; break; }
            sleep 0.1
        done
    done
    rm -f "$pidfile"
    log "$name: stopped pid $pid in $(lab_elapsed "$t0")"
}

# ---- env file ------------------------------------------------------------------------
# write_lab_env: (re)write $LAB/lab.env with every variable tests read. Mode 0600.
write_lab_env() {
    local tmp
    mkdir -p "$LAB"
    tmp="$(mktemp "$LAB/.lab.env.XXXXXX")"
    chmod 0600 "$tmp"
    {
        echo "# b2bsync directory test bed; written by scripts/lab-common.sh. Source it: . $LAB_ENV_FILE"
        local v OL_BULK_COUNT=0
        [ -f "$OL_DIR/bulk.count" ] && OL_BULK_COUNT=$(tr -dc '0-9' < "$OL_DIR/bulk.count")
        for v in LAB_DIR LAB_CA \
                 AD_LDAPS_URL AD_LDAP_URL AD_BASE_DN AD_PARTNERS_DN AD_ADMIN_BIND AD_ADMIN_PASSWORD \
                 AD_SVC_BIND AD_SVC_DN AD_SVC_PASSWORD AD_REALM AD_DOMAIN AD_SAMBA_CONF \
                 AD_SVC_KEYTAB AD_DC_FQDN \
                 OL_LDAPS_URL OL_LDAP_URL OL_BASE_DN OL_PARTNERS_DN OL_ADMIN_DN OL_ADMIN_PASSWORD \
                 OL_SVC_DN OL_SVC_PASSWORD OL_LDAPI_URL OL_BULK_COUNT LAB_PARTNER_PASSWORD \
                 LAB_EXTERNAL_MAIL_ATTR LAB_ACCOUNTS_JSON LAB_KRB5_CONFIG \
                 DS_LDAPS_URL DS_LDAP_URL DS_BASE_DN DS_PARTNERS_DN DS_ADMIN_DN DS_ADMIN_PASSWORD \
                 DS_SVC_DN DS_SVC_PASSWORD DS_PROTECTED_GROUP_DN DS_INSTANCE \
                 AD_ADDR AD_DC2_ADDR AD_DC2_LDAPS_URL AD_DC2_LDAP_URL AD_DC2_SAMBA_CONF; do
            printf "export %s='%s'\n" "$v" "${!v//\'/\'\\\'\'}"
        done
    } > "$tmp"
    mv -f "$tmp" "$LAB_ENV_FILE"
}
LAB_DIR="$LAB"
LAB_CA="$PKI/ca.crt"
AD_ADMIN_PASSWORD="$LAB_AD_ADMIN_PASSWORD"
AD_SVC_PASSWORD="$LAB_SVC_PASSWORD"
AD_SAMBA_CONF="$SAMBA_DIR/etc/smb.conf"
OL_ADMIN_PASSWORD="$LAB_OL_ADMIN_PASSWORD"
OL_SVC_PASSWORD="$LAB_SVC_PASSWORD"
DS_ADMIN_PASSWORD="$LAB_DS_ADMIN_PASSWORD"
DS_SVC_PASSWORD="$LAB_SVC_PASSWORD"
LAB_EXTERNAL_MAIL_ATTR="otherMailbox"
LAB_ACCOUNTS_JSON="$LAB/accounts.json"
LAB_KRB5_CONFIG="$LAB/krb5.conf"
# The service account's keys (samba-up.sh exports them; they change with its password, which
# no test changes) and the DC's host name, the host of its service principal ldap/<host>.
AD_SVC_KEYTAB="$LAB/svc-b2bsync.keytab"
AD_DC_FQDN="$AD_HOST.$AD_UPN_SUFFIX"

# write_krb5_conf: a krb5.conf for kinit against the lab DC's own KDC ($AD_ADDR:88), with
# DNS lookups off, so that tests can prove an old password is refused by Kerberos too.
write_krb5_conf() {
    mkdir -p "$LAB"
    cat > "$LAB_KRB5_CONFIG" <<KRB5
# b2bsync lab; written by scripts/lab-common.sh. Use: KRB5_CONFIG=$LAB_KRB5_CONFIG kinit user@$AD_REALM
[libdefaults]
    default_realm = $AD_REALM
    dns_lookup_realm = false
    dns_lookup_kdc = false
    rdns = false
    udp_preference_limit = 1

[realms]
    $AD_REALM = {
        kdc = $AD_ADDR
    }

[domain_realm]
    .$AD_UPN_SUFFIX = $AD_REALM
    $AD_UPN_SUFFIX = $AD_REALM
KRB5
}

# ---- LDAP helpers -------------------------------------------------------------------------
# ad_pw64 PASSWORD: base64 of the quoted UTF-16LE password for unicodePwd.
ad_pw64() { printf '"%s"' "$1" | iconv -f UTF-8 -t UTF-16LE | base64 -w0; }

# ldap_bind_ok URL DN PASSWORD [extra ldapsearch args]: real simple bind + rootDSE read.
ldap_bind_ok() {
    local url=$1 dn=$2 pw=$3
    shift 3
    LDAPTLS_CACERT="$LAB_CA" LDAPTLS_REQCERT=demand \
        ldapsearch -x -o nettimeout=5 -H "$url" -D "$dn" -w "$pw" -b '' -s base "$@" '(objectClass=*)' 1.1 >/dev/null 2>&1
}

# Starts Samba with CONF in the background (its pid in PIDFILE, its output appended to
# LOGFILE) and waits up to 60 s for an LDAPS bind as BIND to URL; dies with the log's tail
# when Samba exits or never answers. NAME labels the messages.
start_samba() {
    local name=$1 conf=$2 logfile=$3 pidfile=$4 url=$5 bind=$6 password=$7 deadline
    nohup samba -s "$conf" -F --debug-stdout -d1 -M single --maximum-runtime="$AD_MAX_RUNTIME" \
        >>"$logfile" 2>&1 </dev/null &
    echo $! > "$pidfile"
    deadline=$(( $(date +%s) + 60 ))
    until ldap_bind_ok "$url" "$bind" "$password"; do
        pid_alive "$(cat "$pidfile")" || { tail -n 30 "$logfile" >&2; die "$name: exited during start"; }
        [ "$(date +%s)" -lt "$deadline" ] || { tail -n 30 "$logfile" >&2; die "$name: no LDAPS bind after 60s"; }
        sleep 0.1
    done
}
