#!/usr/bin/env bash
# Compares the plans of two builds of b2bsync over the same world, byte for byte: the lab's
# Samba AD (scripts/lab-up.sh must have run) and the Graph emulator with the demo's tenant,
# at each step of the lifecycle (fresh, addresses staged, invited, accepted, done). The
# worlds are driven by the newer build; at each step both builds plan (plan never writes)
# and the JSON files must be equal but for `generated_at`, the time they were made. For
# refactorings that must not change behaviour (issue 11).
#
#   scripts/plan-compare.sh BASE_REV      e.g. scripts/plan-compare.sh 4b604f1
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
base_rev=${1:?usage: scripts/plan-compare.sh BASE_REV}
export B2BSYNC_LAB=${B2BSYNC_LAB:-/tmp/b2bsync-lab}
# shellcheck disable=SC1091
source "$B2BSYNC_LAB/lab.env"
work=$(mktemp -d /tmp/b2bsync-plan-compare.XXXXXX)
port=${PLAN_COMPARE_PORT:-8743}
emu_pid=""
cleanup() {
  [ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null || true
  git worktree remove --force "$work/base" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building $base_rev and HEAD"
git worktree add -q --detach "$work/base" "$base_rev"
(cd "$work/base" && cargo build --locked --quiet --bin b2bsync --target-dir "$root/target/plan-compare")
base_bin="$root/target/plan-compare/debug/b2bsync"
cargo build --locked --quiet --workspace --bins
head_bin="$root/target/debug/b2bsync"

echo "== the world: the lab AD and the emulator with the demo's tenant"
client_id=2b2b5a9c-0d3e-4f1a-9c8b-7a6d5e4f3c2b
export COMPARE_GRAPH_SECRET
COMPARE_GRAPH_SECRET=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
export COMPARE_LDAP_PASSWORD="$AD_SVC_PASSWORD"
python3 "$here/demo-tenant.py" "$work/tenant.json" "$client_id" "$COMPARE_GRAPH_SECRET" >/dev/null
target/debug/graph-emulator --listen "127.0.0.1:$port" --tenant "$work/tenant.json" \
  --ca-out "$work/graph-ca.pem" >"$work/emulator.out" 2>"$work/emulator.log" &
emu_pid=$!
for _ in $(seq 1 100); do grep -q listening "$work/emulator.out" 2>/dev/null && break; sleep 0.1; done
emu="https://127.0.0.1:$port"
tenant_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tenantId"])' "$work/tenant.json")
control() { curl -sS --fail-with-body --cacert "$work/graph-ca.pem" -H 'Content-Type: application/json' "$@"; }
mkdir -p "$work/mappings"; cp mappings/partners.toml "$work/mappings/"
cat >"$work/b2bsync.toml" <<TOML
[ldap]
url = "$AD_LDAPS_URL"
bind_dn = "$AD_SVC_BIND"
password_env = "COMPARE_LDAP_PASSWORD"
ca_file = "$LAB_CA"
[graph]
tenant = "$tenant_id"
client_id = "$client_id"
auth = "client_secret"
client_secret_env = "COMPARE_GRAPH_SECRET"
authority = "$emu"
graph_url = "$emu"
resource = "https://graph.microsoft.com"
ca_file = "graph-ca.pem"
[state]
path = "state/b2bsync.db"
[limits]
address_writes = { max_count = 500, max_percent = 100.0 }
invitations = { max_count = 500, max_percent = 100.0 }
password_randomizations = { max_count = 500, max_percent = 100.0 }
TOML
chmod 600 "$work/b2bsync.toml"
cycle() {
  control -X POST "$emu/_emulator/connect/cycle" -d "{\"ldapUrl\":\"$AD_LDAPS_URL\",\"bindDn\":\"$AD_ADMIN_BIND\",\"password\":\"$AD_ADMIN_PASSWORD\",\"caFile\":\"$LAB_CA\",\"baseDn\":\"$AD_PARTNERS_DN\",\"writeOnPremisesUserPrincipalName\":false}" >/dev/null
}
accept() {
  for id in $(control "$emu/_emulator/tenant" | python3 -c 'import json,sys; print(" ".join(u["id"] for u in json.load(sys.stdin)["users"] if u.get("externalUserState")=="PendingAcceptance"))'); do
    control -X POST "$emu/_emulator/users/$id/accept" -d '{}' >/dev/null
  done
}

differ=0
compare() {
  local step=$1
  "$base_bin" --config "$work/b2bsync.toml" --log-format json plan --out "$work/$step.base.json" >/dev/null 2>"$work/$step.base.log"
  "$head_bin" --config "$work/b2bsync.toml" --log-format json plan --out "$work/$step.head.json" >/dev/null 2>"$work/$step.head.log"
  local actions
  actions=$(python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); print(len(p["actions"]), "actions,", len(p["accounts"]), "accounts, fingerprint", p["fingerprint"][:16])' "$work/$step.head.json")
  if cmp -s <(grep -v '"generated_at"' "$work/$step.base.json") <(grep -v '"generated_at"' "$work/$step.head.json"); then
    echo "  $step: identical ($actions)"
  else
    echo "  $step: DIFFERENT"; diff <(grep -v '"generated_at"' "$work/$step.base.json") <(grep -v '"generated_at"' "$work/$step.head.json") | head -20
    differ=1
  fi
}
b2b() { "$head_bin" --config "$work/b2bsync.toml" --log-format json "$@" >/dev/null 2>&1 || true; }

echo "== plans of $base_rev and HEAD at each step"
compare 1-fresh
b2b run; cycle
compare 2-addresses-staged
b2b run; accept
compare 3-accepted
b2b run
compare 4-done
[ $differ = 0 ] && echo "plan-compare: the plans are byte for byte the same" || { echo "plan-compare: the plans DIFFER"; exit 1; }
