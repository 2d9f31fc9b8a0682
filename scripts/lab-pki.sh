#!/usr/bin/env bash
# Throwaway CA + one server certificate for the lab directories, in $LAB/pki.
#   ca.crt / ca.key          CA (basicConstraints CA:TRUE critical, keyUsage keyCertSign+cRLSign)
#   server.crt / server.key  leaf: SAN IP:127.0.0.1-4, IP:::1, DNS:localhost, DNS:dc1/dc2.lab.example.com;
#                            serverAuth EKU, CA:FALSE; key mode 0600 (Samba refuses anything else)
# Reuses existing files when they verify and are valid for at least 7 more days; --force regenerates.
set -euo pipefail
# shellcheck source=scripts/lab-common.sh
. "$(dirname "$0")/lab-common.sh"

force=0
case "${1:-}" in
    --force) force=1 ;;
    "") ;;
    *) die "usage: $0 [--force]" ;;
esac
require_tools openssl

pki_ok() {
    [ -s "$PKI/ca.crt" ] && [ -s "$PKI/ca.key" ] && [ -s "$PKI/server.crt" ] && [ -s "$PKI/server.key" ] || return 1
    openssl verify -CAfile "$PKI/ca.crt" -purpose sslserver "$PKI/server.crt" >/dev/null 2>&1 || return 1
    openssl x509 -in "$PKI/server.crt" -noout -checkend 604800 >/dev/null 2>&1 || return 1
    openssl x509 -in "$PKI/server.crt" -noout -ext subjectAltName 2>/dev/null | grep -q 'IP Address:127.0.0.2' || return 1
}

t0=$(lab_now)
if [ "$force" -eq 0 ] && pki_ok; then
    chmod 0600 "$PKI/server.key" "$PKI/ca.key"
    log "pki: reusing $PKI ($(lab_elapsed "$t0"))"
    exit 0
fi

umask 077
rm -rf "$PKI"
mkdir -p "$PKI"
cat > "$PKI/openssl.cnf" <<'CNF'
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = placeholder
[ v3_ca ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ v3_server ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, IP:127.0.0.2, IP:127.0.0.3, IP:127.0.0.4, IP:::1, DNS:localhost, DNS:dc1.lab.example.com, DNS:dc2.lab.example.com
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
CNF

openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -config "$PKI/openssl.cnf" -extensions v3_ca -subj "/O=b2bsync lab/CN=b2bsync lab throwaway CA" \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
openssl req -new -newkey rsa:2048 -nodes -sha256 -config "$PKI/openssl.cnf" \
    -subj "/O=b2bsync lab/CN=dc1.lab.example.com" -keyout "$PKI/server.key" -out "$PKI/server.csr" 2>/dev/null
openssl x509 -req -in "$PKI/server.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -sha256 -days 825 -extfile "$PKI/openssl.cnf" -extensions v3_server -out "$PKI/server.crt" 2>/dev/null
rm -f "$PKI/server.csr"
chmod 0600 "$PKI/server.key" "$PKI/ca.key"
chmod 0644 "$PKI/ca.crt" "$PKI/server.crt"
pki_ok || die "pki: generated certificate does not verify"
log "pki: CA and server certificate created in $(lab_elapsed "$t0") ($PKI)"
