#!/usr/bin/env bash
# The Debian package, as an admin meets it (part of scripts/test.sh; needs the lab up and
# target/debug/graph-emulator built): builds it (scripts/package.sh), installs it with
# dpkg -i, checks what it installed and with which owners and modes, checks the units with
# systemd-analyze (verify, and security --offline), configures it for the lab AD and the Graph
# emulator as an admin would, runs the installed `b2bsync check` and the unit's own run as
# the b2bsync user with its secrets laid out as systemd credentials (this machine runs no
# systemd: runuser, and $CREDENTIALS_DIRECTORY as systemd lays it out), then purges the
# package and checks that nothing is left but the admin's own credentials.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
export B2BSYNC_LAB=${B2BSYNC_LAB:-/tmp/b2bsync-lab}
# shellcheck disable=SC1091
source "$B2BSYNC_LAB/lab.env"
work="$B2BSYNC_LAB/package"
port=${PACKAGE_TEST_PORT:-8643}
unit=/usr/lib/systemd/system/b2bsync.service
creds=/run/credentials/b2bsync.service

fails=0
ok() { printf '  ok: %s\n' "$*"; }
bad() { printf '  FAILED: %s\n' "$*"; fails=$((fails + 1)); }
expect() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
mode_of() { stat -c '%a %U:%G' "$1" 2>/dev/null || echo missing; }
expect_mode() { local got; got=$(mode_of "$1"); [ "$got" = "$2" ] && ok "$1 is $2" || bad "$1 is $got, not $2"; }

emu_pid=""
cleanup() {
  local rc=$?
  [ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null && wait "$emu_pid" 2>/dev/null || true
  if dpkg -s b2bsync >/dev/null 2>&1; then dpkg -P b2bsync >/dev/null 2>&1 || true; fi
  rm -rf "$creds" /etc/b2bsync
  exit "$rc"
}
trap cleanup EXIT INT TERM

rm -rf "$work"; mkdir -p "$work"; chmod 700 "$work"
command -v systemd-analyze >/dev/null || { apt-get install -y -qq systemd >/dev/null; }

# The debug build that scripts/test.sh already made (PACKAGE_PROFILE=release to check the
# release build instead: several minutes more on 2 cores).
echo "== building the package (${PACKAGE_PROFILE:=dev} build)"
deb=$(PACKAGE_PROFILE="$PACKAGE_PROFILE" "$here/package.sh")
echo "package: $deb"
dpkg-deb -c "$deb" > "$work/contents.txt"
dpkg-deb -I "$deb" > "$work/info.txt"
sed 's/^/  /' "$work/contents.txt"
expect "the package holds the b2bsync binary" grep -q '\./usr/bin/b2bsync$' "$work/contents.txt"
expect "the package holds no emulator" bash -c "! grep -q 'graph-emulator' '$work/contents.txt'"
expect "the package declares its conffiles" bash -c "dpkg-deb --ctrl-tarfile '$deb' | tar -xO ./conffiles | grep -qx /etc/b2bsync/b2bsync.toml"

echo "== dpkg -i"
dpkg -i "$deb" > "$work/install.out" 2>&1 || { cat "$work/install.out"; bad "dpkg -i"; exit 1; }
expect "the b2bsync system user exists" getent passwd b2bsync
expect "its shell is nologin" bash -c "getent passwd b2bsync | grep -q ':/usr/sbin/nologin$'"
expect_mode /usr/bin/b2bsync "755 root:root"
expect_mode /etc/b2bsync "750 root:b2bsync"
expect_mode /etc/b2bsync/b2bsync.toml "640 root:b2bsync"
expect_mode /etc/b2bsync/mappings "750 root:b2bsync"
expect_mode /etc/b2bsync/mappings/partners.toml "640 root:b2bsync"
expect_mode /etc/b2bsync/credentials "700 root:root"
expect_mode /var/lib/b2bsync "700 b2bsync:b2bsync"
expect_mode "$unit" "644 root:root"
expect_mode /usr/lib/systemd/system/b2bsync.timer "644 root:root"
expect "the timer is not enabled" bash -c "! ls /etc/systemd/system/timers.target.wants/b2bsync.timer 2>/dev/null"
expect "the man page names the commands" bash -c "zcat /usr/share/man/man1/b2bsync.1.gz | grep -q 'b2bsync\\\\-run'"
expect "a man page per command" test -s /usr/share/man/man1/b2bsync-run.1.gz
expect "bash completion loads" bash -c "source /usr/share/bash-completion/completions/b2bsync && complete -p b2bsync"
expect "zsh completion installed" test -s /usr/share/zsh/vendor-completions/_b2bsync
expect "fish completion installed" test -s /usr/share/fish/vendor_completions.d/b2bsync.fish
expect "the installed binary answers --version" /usr/bin/b2bsync --version

echo "== systemd-analyze"
if systemd-analyze verify "$unit" /usr/lib/systemd/system/b2bsync.timer > "$work/verify.out" 2>&1; then
  ok "systemd-analyze verify: both units"
else
  cat "$work/verify.out"; bad "systemd-analyze verify"
fi
systemd-analyze security --offline=true "$unit" > "$work/security.out" 2>&1 || true
score=$(sed -n 's/.*Overall exposure level for b2bsync.service: \([0-9.]*\).*/\1/p' "$work/security.out")
echo "  exposure: $(grep 'Overall exposure' "$work/security.out" || echo '?')"
expect "systemd-analyze security --offline: exposure at most 2.0 (OK)" \
  python3 -c "import sys; sys.exit(0 if sys.argv[1] and float(sys.argv[1]) <= 2.0 else 1)" "${score:-}"

echo "== the admin configures it: the lab AD and the Graph emulator"
client_id=2b2b5a9c-0d3e-4f1a-9c8b-7a6d5e4f3c2b
graph_secret=$(python3 -c 'import secrets; print("pkg-" + secrets.token_urlsafe(24))')
python3 "$here/demo-tenant.py" "$work/tenant.json" "$client_id" "$graph_secret"
target/debug/graph-emulator --listen "127.0.0.1:$port" --tenant "$work/tenant.json" \
  --ca-out "$work/graph-ca.pem" >"$work/emulator.out" 2>"$work/emulator.log" &
emu_pid=$!
for _ in $(seq 1 100); do grep -q listening "$work/emulator.out" 2>/dev/null && break; sleep 0.1; done
base="https://127.0.0.1:$port"
tenant_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tenantId"])' "$work/tenant.json")
install -o root -g b2bsync -m 0640 "$LAB_CA" /etc/b2bsync/corp-root-ca.pem
install -o root -g b2bsync -m 0640 "$work/graph-ca.pem" /etc/b2bsync/graph-ca.pem
sed -i \
  -e "s|^url = .*|url = \"$AD_LDAPS_URL\"|" \
  -e "s|^bind_dn = .*|bind_dn = \"$AD_SVC_BIND\"|" \
  -e "s|^tenant = .*|tenant = \"$tenant_id\"|" \
  -e "s|^client_id = .*|client_id = \"$client_id\"|" \
  -e "/^\[graph\]/a authority = \"$base\"\ngraph_url = \"$base\"\nresource = \"https://graph.microsoft.com\"\nca_file = \"graph-ca.pem\"" \
  /etc/b2bsync/b2bsync.toml
# The packaged limits (10 % of scope per run) would stop a first wave that writes most of a
# lab left by earlier tests; the admin reviews the first plan and lets this wave through.
sed -i -E 's/max_percent = [0-9.]+/max_percent = 100.0/' /etc/b2bsync/b2bsync.toml
# The lab has no OU=Vendors: the admin drops the example mapping they do not use.
rm /etc/b2bsync/mappings/vendors-table.toml /etc/b2bsync/mappings/vendors-table.csv
umask 077
printf '%s' "$AD_SVC_PASSWORD" > /etc/b2bsync/credentials/ldap-password
printf '%s' "$graph_secret" > /etc/b2bsync/credentials/graph-client-secret
umask 022
expect_mode /etc/b2bsync/b2bsync.toml "640 root:b2bsync"

echo "== the unit's run, as systemd would start it (User=, LoadCredential=, Environment=)"
user=$(sed -n 's/^User=//p' "$unit")
rm -rf "$creds"; install -d -o "$user" -m 0500 "$creds"
while IFS=: read -r id path; do
  install -o "$user" -m 0400 "$path" "$creds/$id"
done < <(sed -n 's/^LoadCredential=//p' "$unit")
envs=(PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/var/lib/b2bsync "CREDENTIALS_DIRECTORY=$creds")
while IFS= read -r line; do envs+=("${line//%d/$creds}"); done < <(sed -n 's/^Environment=//p' "$unit")
as_service() { (cd / && runuser -u "$user" -- env -i "${envs[@]}" "$@"); }
read -ra exec_start <<<"$(sed -n 's/^ExecStart=//p' "$unit")"
read -ra exec_stop_post <<<"$(sed -n 's/^ExecStopPost=//p' "$unit")"

if as_service /usr/bin/b2bsync --config /etc/b2bsync/b2bsync.toml check > "$work/check.out" 2>&1; then
  ok "the installed b2bsync check, as the b2bsync user"
else
  cat "$work/check.out"; bad "b2bsync check as the b2bsync user"
fi
if as_service /usr/bin/b2bsync --config /etc/b2bsync/b2bsync.toml plan > "$work/plan.out" 2>&1; then
  ok "the installed b2bsync plan, as the b2bsync user: $(grep -c . "$work/plan.out") lines to review"
else
  tail -20 "$work/plan.out"; bad "b2bsync plan as the b2bsync user"
fi
set +e
as_service "${exec_start[@]}" > "$work/run.out" 2>&1
rc=$?
set -e
if [ "$rc" = 0 ]; then ok "ExecStart (run) as the b2bsync user: exit 0"; else tail -20 "$work/run.out"; bad "ExecStart exit $rc"; fi
# The lab may have been written by earlier tests (addresses already staged), so the proof is
# that every lab partner was read, joined and recorded, not a count of writes.
expect "the run recorded every lab partner in the state store" \
  python3 -c "
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
partners = [a for a in json.load(open(sys.argv[2]))['accounts'] if a['container'] == 'partners']
rows = db.execute('SELECT state, count(*) FROM accounts GROUP BY state').fetchall()
writes = db.execute(\"SELECT count(*) FROM journal WHERE phase = 'done'\").fetchone()[0]
print('  accounts per state:', dict(rows), '- writes done:', writes)
sys.exit(0 if sum(n for _, n in rows) >= len(partners) > 0 else 1)" /var/lib/b2bsync/b2bsync.db "$B2BSYNC_LAB/accounts.json"
expect_mode /var/lib/b2bsync/b2bsync.db "600 b2bsync:b2bsync"
as_service "${exec_stop_post[@]}" > "$work/status.out" 2>&1 && ok "ExecStopPost (status --html)" || { cat "$work/status.out"; bad "ExecStopPost"; }
expect "the HTML report is written" test -s /var/lib/b2bsync/status.html
# A second run while the lock is held exits 5, which the unit counts as success.
expect "SuccessExitStatus names exit code 5 (another run holds the lock)" grep -qx 'SuccessExitStatus=5' "$unit"
expect "no secret in any output or in the state store" bash -c "! grep -rqF -e '$graph_secret' -e '$AD_SVC_PASSWORD' '$work'/*.out /var/lib/b2bsync"
expect "the b2bsync user cannot read the credentials store" bash -c "! runuser -u b2bsync -- cat /etc/b2bsync/credentials/ldap-password 2>/dev/null"
rm -rf "$creds"

echo "== dpkg -P"
dpkg -P b2bsync > "$work/purge.out" 2>&1 || { cat "$work/purge.out"; bad "dpkg -P"; }
expect "no binary left" test ! -e /usr/bin/b2bsync
expect "no unit left" test ! -e "$unit"
expect "no state left" test ! -e /var/lib/b2bsync
expect "no user left" bash -c "! getent passwd b2bsync"
expect "no group left" bash -c "! getent group b2bsync"
expect "no man page left" test ! -e /usr/share/man/man1/b2bsync.1.gz
left=$(find /etc/b2bsync -mindepth 1 2>/dev/null | sort | tr '\n' ' ')
# What the admin put there (the CA files, the secrets) is theirs; everything packaged is gone.
expect "only the admin's own files are left in /etc/b2bsync ($left)" \
  test "$left" = "/etc/b2bsync/corp-root-ca.pem /etc/b2bsync/credentials /etc/b2bsync/credentials/graph-client-secret /etc/b2bsync/credentials/ldap-password /etc/b2bsync/graph-ca.pem "
expect "dpkg says it was told so" grep -q "kept /etc/b2bsync/credentials" "$work/purge.out"

if [ $fails = 0 ]; then echo "package: all checks passed"; else echo "package: $fails checks FAILED"; exit 1; fi
