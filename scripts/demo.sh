#!/usr/bin/env bash
# The whole job, end to end, on the bundled default: a throwaway Samba AD with partner
# accounts, the Graph emulator with a matching tenant, and b2bsync run as a scheduler would
# run it, three times, with an Entra Connect cycle and the partners' acceptance in between.
#
#   scripts/demo.sh          runs everything and stops the lab at the end
#   scripts/demo.sh --keep   leaves the lab and the emulator running to look around
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
export B2BSYNC_LAB=${B2BSYNC_LAB:-/tmp/b2bsync-lab}
keep=0
[ "${1:-}" = "--keep" ] && keep=1
demo="$B2BSYNC_LAB/demo"
port=${DEMO_PORT:-8443}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
emu_pid=""
cleanup() {
  local rc=$?
  if [ $keep = 0 ]; then
    [ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null && wait "$emu_pid" 2>/dev/null || true
    "$here/lab-down.sh" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT INT TERM

say "Building b2bsync and the Graph emulator"
cargo build --locked --workspace --bins

say "Starting a throwaway Active Directory (Samba AD DC on 127.0.0.1) with partner accounts"
"$here/lab-up.sh" --no-dc2   # the demo needs one DC
# shellcheck disable=SC1091
source "$B2BSYNC_LAB/lab.env"

rm -rf "$demo"; mkdir -p "$demo/mappings"; chmod 700 "$demo"
client_id=2b2b5a9c-0d3e-4f1a-9c8b-7a6d5e4f3c2b
export DEMO_GRAPH_SECRET
DEMO_GRAPH_SECRET=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
export DEMO_LDAP_PASSWORD="$AD_SVC_PASSWORD"

say "Starting the Graph emulator with a tenant that matches the AD"
python3 "$here/demo-tenant.py" "$demo/tenant.json" "$client_id" "$DEMO_GRAPH_SECRET"
target/debug/graph-emulator --listen "127.0.0.1:$port" --tenant "$demo/tenant.json" \
  --ca-out "$demo/graph-ca.pem" >"$demo/emulator.out" 2>"$demo/emulator.log" &
emu_pid=$!
for _ in $(seq 1 100); do grep -q listening "$demo/emulator.out" 2>/dev/null && break; sleep 0.1; done
grep listening "$demo/emulator.out"
base="https://127.0.0.1:$port"
tenant_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tenantId"])' "$demo/tenant.json")
control() { curl -sS --fail-with-body --cacert "$demo/graph-ca.pem" -H 'Content-Type: application/json' "$@"; }

cp mappings/partners.toml "$demo/mappings/"
cat >"$demo/b2bsync.toml" <<TOML
# b2bsync configuration for the demo: the lab AD and the Graph emulator.
[ldap]
url = "$AD_LDAPS_URL"
bind_dn = "$AD_SVC_BIND"
password_env = "DEMO_LDAP_PASSWORD"
ca_file = "$LAB_CA"

[graph]
tenant = "$tenant_id"
client_id = "$client_id"
auth = "client_secret"
client_secret_env = "DEMO_GRAPH_SECRET"
authority = "$base"
graph_url = "$base"
# The emulator stands in for Microsoft Graph: tokens are asked for Graph's own audience.
resource = "https://graph.microsoft.com"
ca_file = "graph-ca.pem"

[state]
path = "state/b2bsync.db"

[limits]
address_writes = { max_count = 500, max_percent = 100.0 }
invitations = { max_count = 500, max_percent = 100.0 }
password_randomizations = { max_count = 500, max_percent = 100.0 }
TOML
b2b() { target/debug/b2bsync --config "$demo/b2bsync.toml" --log-format human "$@"; }

say "Check: configuration, LDAP over TLS, Graph token and permissions (nothing is changed)"
b2b check

say "Plan: what the first run would do (a dry run, nothing is written)"
b2b plan --out "$demo/plan-1.json" --csv "$demo/plan-1.csv"

say "Run 1: write the partners' external address (AD 'mail' for synced users, 'otherMails' in the cloud for cloud-only ones) and invite the cloud-only partner"
b2b run

say "Explain a blocked partner: why p.baker is held back, the fix, and what happens next (from the state store, no network)"
b2b explain p.baker

say "Entra Connect sync cycle. The admin has already changed the Entra Connect rule that wrote onPremisesUserPrincipalName (docs/operations.md), so this first cycle runs without it: the synced users' new 'mail' flows from AD to the cloud, and p.baker's onPremisesUserPrincipalName is cleared"
control -X POST "$base/_emulator/connect/cycle" -d "{\"ldapUrl\":\"$AD_LDAPS_URL\",\"bindDn\":\"$AD_ADMIN_BIND\",\"password\":\"$AD_ADMIN_PASSWORD\",\"caFile\":\"$LAB_CA\",\"baseDn\":\"$AD_PARTNERS_DN\",\"writeOnPremisesUserPrincipalName\":false}"
echo

say "Run 2: the synced partners now show their address in the cloud, so they are invited; p.baker is no longer blocked, so his address is written to AD 'mail' (he waits for the next cycle)"
b2b run

say "The partners accept their invitations (as each would, in their browser)"
pending=$(control "$base/_emulator/tenant" | python3 -c 'import json,sys; print(" ".join(u["id"] for u in json.load(sys.stdin)["users"] if u.get("externalUserState")=="PendingAcceptance"))')
for id in $pending; do control -X POST "$base/_emulator/users/$id/accept" -d '{}' >/dev/null; echo "accepted: $id"; done

say "Run 3: the accepted partners' on-premises passwords are set to unknown random values"
b2b run

say "Half an hour later: the next Entra Connect cycle carries p.baker's 'mail' to the cloud; run 4 invites him"
control -X POST "$base/_emulator/connect/cycle" -d "{\"ldapUrl\":\"$AD_LDAPS_URL\",\"bindDn\":\"$AD_ADMIN_BIND\",\"password\":\"$AD_ADMIN_PASSWORD\",\"caFile\":\"$LAB_CA\",\"baseDn\":\"$AD_PARTNERS_DN\",\"writeOnPremisesUserPrincipalName\":false}"
echo
b2b run
pending=$(control "$base/_emulator/tenant" | python3 -c 'import json,sys; print(" ".join(u["id"] for u in json.load(sys.stdin)["users"] if u.get("externalUserState")=="PendingAcceptance"))')
for id in $pending; do control -X POST "$base/_emulator/users/$id/accept" -d '{}' >/dev/null; echo "accepted: $id"; done

say "Run 5: his on-premises password is randomized too; a further run finds nothing to do"
b2b run
b2b run

say "Proof: each account's state (read straight from the SQLite state file) and whether its old internal password still signs in to the AD"
python3 - "$B2BSYNC_LAB/accounts.json" "$demo/state/b2bsync.db" <<'PY'
import json, os, sqlite3, subprocess, sys
accounts = json.load(open(sys.argv[1]))["accounts"]
state = {dn.lower(): (st, reason) for dn, st, reason in sqlite3.connect(sys.argv[2]).execute("SELECT dn, state, reason FROM accounts")}
env = dict(os.environ, LDAPTLS_CACERT=os.environ["LAB_CA"])
for a in accounts:
    if a["container"] != "partners":
        continue
    st, reason = state.get(a["ad_dn"].lower(), ("?", None))
    r = subprocess.run(["ldapsearch", "-H", os.environ["AD_LDAPS_URL"], "-D", a["ad_dn"], "-w", os.environ["LAB_PARTNER_PASSWORD"],
                        "-b", "", "-s", "base", "(objectClass=*)", "1.1"], env=env, capture_output=True)
    old = "signs in" if r.returncode == 0 else "REFUSED (LDAP 49)"
    note = " (a disabled account never signs in)" if not a["enabled"] else ""
    print(f"  {a['sam']:<11} {st:<8} {reason or '':<28} old password: {old}{note}")
PY

say "Status: the migration funnel (and the same as one HTML page for the auditors)"
b2b status --html "$demo/status.html" --format table
echo "HTML report: $demo/status.html"

say "Every account, one row each, with the counts per partner domain (the HTML page has the same list)"
b2b status --accounts

say "Explain a converted partner: p.adams, with every write of the journal"
b2b explain p.adams

say "What the last run that changed something did (from the journal; report skips the runs that changed nothing, and says so)"
b2b report --format table

echo
echo "The demo's files are in $demo (config, plans, state). Run 'scripts/demo.sh --keep' to look around afterwards."
