#!/usr/bin/env bash
# b2bsync benchmark (the targets of docs/performance.md). A benchmark, not a test: it prints each
# figure beside its reference, as a ratio measured in the same run, and never fails on a
# missed target (it fails only when something could not be measured).
#
#   scripts/bench.sh            everything (about 5 minutes on 2 cores, after the release build)
#
# Knobs (environment):
#   BENCH_LAB=/tmp/b2bsync-bench  private lab dir (its own slapd on BENCH_OL_PORT/BENCH_OLS_PORT)
#   BENCH_USERS=100000            accounts in the no-change runs (OpenLDAP ou=Bulk + emulator)
#   BENCH_CONVERT=10000           cloud-only accounts converted against the throttling emulator
#   BENCH_TIME_SCALE=0.1          emulator time scale for the conversion runs: throttling
#                                 windows and the injected latency are both multiplied by it
#   BENCH_LATENCY_MS=50,150       injected latency per request at time scale 1
#   BENCH_SERIAL_SAMPLE=300       accounts the serial reference converter converts (its rate
#                                 is per account, so a sample measures it)
#   BENCH_SERIAL_REAL_SAMPLE=30   more accounts it converts at time scale 1 with the real latency
#   BENCH_CONCURRENCY=128         b2bsync's [apply] concurrency for the conversion run
#   BENCH_PROFILE=release         `debug` only to smoke-test the harness (figures meaningless)
#   BENCH_HEAPTRACK=0             1: one more `run --full` under heaptrack (Debian's heaptrack), after
#                                 the measured ones; its peak-memory report in
#                                 $BENCH_LAB/nochange/heaptrack.txt (where the peak goes)
#   BENCH_PARTS=all               `reads`: only the no-change runs and the LDAP read rate (parts
#                                 1 to 3), e.g. for BENCH_USERS=1000000; the conversions need
#                                 no large directory
#
# Every run also saves its no-change figures as $BENCH_LAB/scale-$BENCH_USERS.json and prints
# them beside those of the other sizes saved there (100,000 and 1,000,000 side by side).
#
# Needs what the README's set-up installs (Rust, Debian's slapd and ldap-utils via the lab
# scripts, python3); installs GNU time from Debian when missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

BENCH_LAB=${BENCH_LAB:-/tmp/b2bsync-bench}
BENCH_USERS=${BENCH_USERS:-100000}
BENCH_CONVERT=${BENCH_CONVERT:-10000}
BENCH_TIME_SCALE=${BENCH_TIME_SCALE:-0.1}
BENCH_LATENCY_MS=${BENCH_LATENCY_MS:-50,150}
BENCH_SERIAL_SAMPLE=${BENCH_SERIAL_SAMPLE:-300}
BENCH_SERIAL_REAL_SAMPLE=${BENCH_SERIAL_REAL_SAMPLE:-30}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-128}
BENCH_PARTS=${BENCH_PARTS:-all}
BENCH_HEAPTRACK=${BENCH_HEAPTRACK:-0}
case "$BENCH_PARTS" in all|reads) ;; *) echo "BENCH_PARTS must be all or reads" >&2; exit 1 ;; esac
BENCH_OL_PORT=${BENCH_OL_PORT:-5389}
BENCH_OLS_PORT=${BENCH_OLS_PORT:-5636}
[ "$BENCH_CONVERT" -le "$BENCH_USERS" ] || { echo "BENCH_CONVERT must not exceed BENCH_USERS" >&2; exit 1; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
note() { printf '%s\n' "$*" >&2; }
results="$BENCH_LAB/results.txt"

# ---- tools --------------------------------------------------------------------------------
if [ ! -x /usr/bin/time ]; then
    say "Installing GNU time (peak memory)"
    [ "$(id -u)" -eq 0 ] || { echo "need root to install GNU time (apt-get install time)" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null
fi

BENCH_PROFILE=${BENCH_PROFILE:-release}
say "Building b2bsync, the emulator and the LDAP read helper ($BENCH_PROFILE)"
if [ "$BENCH_PROFILE" = release ]; then
    cargo build --release --locked --workspace --bins --example bench_ldap_read >&2
    bin="$root/target/release"
else
    # a quick smoke run of the harness itself; the figures mean nothing in a debug build
    cargo build --locked --workspace --bins --example bench_ldap_read >&2
    bin="$root/target/debug"
fi

# ---- a private OpenLDAP: the lab scripts with this lab's dir and ports ----------------------
# The shared lab (scripts/lab-up.sh, the tests) owns ports 3389/3636 (OpenLDAP) and 4389/4636
# (389 Directory Server); the benchmark runs its own slapd next to it on 5389/5636, in its own
# directory.
mkdir -p "$BENCH_LAB"
chmod 0700 "$BENCH_LAB"
labscripts="$root/scripts"
export LAB_OL_LDAP_PORT="$BENCH_OL_PORT" LAB_OL_LDAPS_PORT="$BENCH_OLS_PORT"
export B2BSYNC_LAB="$BENCH_LAB" LAB_FIXTURE="$root/tests/fixtures/partners.json"

emu_pid=""
cleanup() {
    local rc=$?
    if [ -n "$emu_pid" ]; then kill "$emu_pid" 2>/dev/null && wait "$emu_pid" 2>/dev/null || true; fi
    "$labscripts/openldap-down.sh" >/dev/null 2>&1 || true
    exit "$rc"
}
trap cleanup EXIT INT TERM

say "OpenLDAP with $BENCH_USERS generated accounts under ou=Bulk (ports $BENCH_OL_PORT/$BENCH_OLS_PORT)"
"$labscripts/openldap-up.sh" --bulk "$BENCH_USERS"
loaded_at=$(date +%s)
# shellcheck disable=SC1091
source "$BENCH_LAB/lab.env"
width=$(( ${#BENCH_USERS} > 6 ? ${#BENCH_USERS} : 6 ))
bulk_base="ou=Bulk,$OL_BASE_DN"

# ---- configuration ----------------------------------------------------------------------------
client_id=3c3b7a1e-0000-4000-8000-00000000be9c
export BENCH_GRAPH_SECRET BENCH_LDAP_PASSWORD="$OL_SVC_PASSWORD"
BENCH_GRAPH_SECRET=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')

# write_config DIR FILTER CONCURRENCY: a b2bsync config + mapping in DIR for the emulator at $base.
write_config() {
    local dir=$1 filter=$2 concurrency=$3
    rm -rf "$dir"; mkdir -p "$dir/mappings"
    cat >"$dir/mappings/bulk.toml" <<TOML
description = "Benchmark: generated OpenLDAP accounts, joined to cloud-only users by UPN"
address = "lower(trim(otherMailbox))"
[source]
attributes = ["uid", "otherMailbox"]
multi_valued = []
[scope]
base_dns = ["$bulk_base"]
filter = "$filter"
[join]
anchor = "objectGUID"
[join.cloud_only]
source = "uid ~ '@bench.example.com'"
cloud = "userPrincipalName"
[write]
cloud_only = ["otherMails", "mail"]
[invitation]
send_message = false
TOML
    cat >"$dir/b2bsync.toml" <<TOML
[ldap]
url = "$OL_LDAPS_URL"
bind_dn = "$OL_SVC_DN"
password_env = "BENCH_LDAP_PASSWORD"
ca_file = "$LAB_CA"
page_size = 1000

[graph]
tenant = "$tenant_id"
client_id = "$client_id"
auth = "client_secret"
client_secret_env = "BENCH_GRAPH_SECRET"
authority = "$base"
graph_url = "$base"
resource = "https://graph.microsoft.com"
ca_file = "$emu_dir/graph-ca.pem"

[state]
path = "state/b2bsync.db"

[limits]
address_writes = { max_count = 10000000, max_percent = 100.0 }
invitations = { max_count = 10000000, max_percent = 100.0 }
reinvitations = { max_count = 10000000, max_percent = 100.0 }
password_randomizations = { max_count = 10000000, max_percent = 100.0 }

[invitation]
redirect_url = "https://myapps.microsoft.com/?tenantid=$tenant_id"

[policy]
# The benchmark's accounts have no password worth randomizing; the figures are about Graph.
randomize_password = "never"

[apply]
concurrency = $concurrency
TOML
}

# start_emulator TENANT.json: (re)starts the emulator on a free port; sets base, emu_pid.
emu_dir="$BENCH_LAB/emulator"
mkdir -p "$emu_dir"
start_emulator() {
    if [ -n "$emu_pid" ]; then kill "$emu_pid" 2>/dev/null && wait "$emu_pid" 2>/dev/null || true; fi
    mkdir -p "$emu_dir"
    rm -f "$emu_dir/out"
    local started
    started=$(date +%s.%N)
    GRAPH_EMULATOR_LOG=warn "$bin/graph-emulator" --listen 127.0.0.1:0 --tenant "$1" \
        --ca-out "$emu_dir/graph-ca.pem" >"$emu_dir/out" 2>"$emu_dir/log" &
    emu_pid=$!
    # a 1,000,000-user tenant takes about a minute to load on 2 busy cores
    for _ in $(seq 1 6000); do grep -q listening "$emu_dir/out" 2>/dev/null && break; sleep 0.1; done
    grep -q listening "$emu_dir/out" || { cat "$emu_dir/log" >&2; echo "the emulator did not start" >&2; exit 1; }
    # its load time and memory (the tenant file parsed, the directory and its index built)
    python3 -c 'import json, sys; print(json.dumps({"seconds": round(float(sys.argv[2]) - float(sys.argv[1]), 2), "rss_kb": int(sys.argv[3])}))' \
        "$started" "$(date +%s.%N)" "$(awk '/^VmRSS/{print $2}' "/proc/$emu_pid/status")" >"$emu_dir/load.json"
    base=$(sed -n 's/.*listening on \(https:[^ ]*\).*/\1/p' "$emu_dir/out")
    base=${base%/}
}
control() { curl -sS --fail-with-body --cacert "$emu_dir/graph-ca.pem" -H 'Content-Type: application/json' "$@"; }
tenant_id=$(python3 -c 'import uuid; print(uuid.uuid5(uuid.NAMESPACE_URL, "b2bsync-bench-tenant"))')

# timed_run DIR NAME ARGS...: runs b2bsync under GNU time; logs in DIR/NAME.{log,time}.
timed_run() {
    local dir=$1 name=$2
    shift 2
    local rc=0
    /usr/bin/time -v -o "$dir/$name.time" "$bin/b2bsync" --config "$dir/b2bsync.toml" --log-format json "$@" \
        >"$dir/$name.out" 2>"$dir/$name.log" || rc=$?
    # 0 ok, 2 some actions failed: both are results to report, anything else is a broken run.
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then
        tail -n 20 "$dir/$name.log" >&2
        echo "b2bsync $* exited $rc" >&2
        exit 1
    fi
}

# ================================================================================================
say "1. No-change runs over $BENCH_USERS accounts: full (--full) and incremental"
nochange="$BENCH_LAB/nochange"
python3 "$here/bench/tenant.py" "$emu_dir/tenant-nochange.json" "$client_id" "$BENCH_GRAPH_SECRET" \
    --users "$BENCH_USERS" --width "$width" --converted
start_emulator "$emu_dir/tenant-nochange.json"
cp "$emu_dir/load.json" "$BENCH_LAB/nochange-emulator-load.json"
write_config "$nochange" "(objectClass=inetOrgPerson)" 8
note "seeding the state store with a first run (not measured)"
timed_run "$nochange" seed run
# Generic LDAP incremental reads reach back [ldap] change_overlap_secs (60 s) before a read's
# start for writes in flight; a directory loaded less than that before the run that sets the
# mark is read again whole. A real directory was loaded long ago: let a minute pass.
settle=$((loaded_at + 65 - $(date +%s)))
if [ "$settle" -gt 0 ]; then
    note "waiting ${settle}s so that the bulk load is older than the 60 s change overlap"
    sleep "$settle"
fi
control -X DELETE "$base/_emulator/requests" >/dev/null
timed_run "$nochange" full run --full
control "$base/_emulator/requests" >"$nochange/full.requests.json"
control -X DELETE "$base/_emulator/requests" >/dev/null
timed_run "$nochange" steady run
control "$base/_emulator/requests" >"$nochange/steady.requests.json"
note "the emulator alone serving the same user pages (the part of the wall time that is not b2bsync's)"
select=$(sed -n 's/^pub const USER_SELECT: &str = "\([^"]*\)";/\1/p' "$root/src/cloud/graph.rs")
[ -n "$select" ] || { echo "cannot find USER_SELECT in src/cloud/graph.rs" >&2; exit 1; }
python3 "$here/bench/read-users.py" --base "$base" --ca "$emu_dir/graph-ca.pem" --tenant "$tenant_id" \
    --client-id "$client_id" --select "$select" >"$nochange/emulator-read.json"
awk '/^VmHWM/{print $2}' "/proc/$emu_pid/status" >"$nochange/emulator-peak-kb"

say "2. The same after one account changed (incremental reads)"
LDAPTLS_CACERT="$LAB_CA" ldapmodify -x -H "$OL_LDAPS_URL" -D "$OL_ADMIN_DN" -w "$OL_ADMIN_PASSWORD" >/dev/null <<LDIF
dn: uid=bulk$(printf "%0${width}d" 1),$bulk_base
changetype: modify
replace: displayName
displayName: Bulk User One (changed)
LDIF
control -X DELETE "$base/_emulator/requests" >/dev/null
timed_run "$nochange" incremental run
control "$base/_emulator/requests" >"$nochange/incremental.requests.json"

if [ "$BENCH_HEAPTRACK" = 1 ]; then
    say "2b. Where the peak memory of a full run goes (heaptrack; not measured)"
    command -v heaptrack >/dev/null || { echo "BENCH_HEAPTRACK=1 needs heaptrack (apt-get install heaptrack)" >&2; exit 1; }
    rm -f "$nochange"/heaptrack.*
    heaptrack -o "$nochange/heaptrack" "$bin/b2bsync" --config "$nochange/b2bsync.toml" --log-format json run --full \
        >"$nochange/heaptrack.out" 2>"$nochange/heaptrack.log" || true
    heaptrack_print --print-peaks 1 --print-allocators 0 --print-temporary 0 --print-leaks 0 \
        --peak-limit 25 "$nochange"/heaptrack*.zst >"$nochange/heaptrack.txt" 2>&1 || true
    note "  peak-memory report: $nochange/heaptrack.txt"
fi

say "3. LDAP read throughput: b2bsync's adapter against ldapsearch -E pr=1000/noprompt"
attrs=$(python3 - "$root/src/source/mod.rs" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
block = re.search(r"const ACCOUNT_ATTRIBUTES: &\[&str\] = &\[(.*?)\];", src, re.S).group(1)
# b2bsync asks a generic server for entryCSN too (its incremental mark): so does ldapsearch.
names = re.findall(r'"([^"]+)"', block) + ["entryCSN", "uid", "otherMailbox"]
seen, out = set(), []
for n in names:
    if n.lower() not in seen:
        seen.add(n.lower()); out.append(n)
print(" ".join(out))
PY
)
ldap_runs=3
best_b2b=""; best_ls=""
for i in $(seq 1 $ldap_runs); do
    b=$("$bin/examples/bench_ldap_read" "$nochange/b2bsync.toml")
    s0=$(date +%s.%N)
    # shellcheck disable=SC2086
    LDAPTLS_CACERT="$LAB_CA" ldapsearch -x -LLL -H "$OL_LDAPS_URL" -D "$OL_SVC_DN" -w "$OL_SVC_PASSWORD" \
        -E pr=1000/noprompt -b "$bulk_base" "(objectClass=inetOrgPerson)" $attrs >"$BENCH_LAB/ldapsearch.ldif"
    s1=$(date +%s.%N)
    n_ls=$(grep -c '^dn:' "$BENCH_LAB/ldapsearch.ldif")
    ls_json=$(python3 -c "import sys; print('{\"entries\":%d,\"seconds\":%.3f}' % (int(sys.argv[1]), float(sys.argv[3]) - float(sys.argv[2])))" "$n_ls" "$s0" "$s1")
    note "  round $i: b2bsync $b, ldapsearch $ls_json"
    best_b2b="$best_b2b $b"; best_ls="$best_ls $ls_json"
done
rm -f "$BENCH_LAB/ldapsearch.ldif"
mv "$BENCH_LAB/nochange-emulator-load.json" "$nochange/emulator-load.json"

if [ "$BENCH_PARTS" = reads ]; then
    say "Results (parts 1 to 3)"
    python3 "$here/bench/report.py" --parts reads \
        --users "$BENCH_USERS" --convert "$BENCH_CONVERT" --time-scale "$BENCH_TIME_SCALE" \
        --latency "$BENCH_LATENCY_MS" --latency-scaled "-" --concurrency "$BENCH_CONCURRENCY" \
        --nochange "$nochange" --convert-dir "-" --scale-dir "$BENCH_LAB" \
        --ldap-b2bsync "$best_b2b" --ldap-ldapsearch "$best_ls" | tee "$results"
    note "(saved in $results; logs under $BENCH_LAB)"
    exit 0
fi

# ================================================================================================
say "4. Converting $BENCH_CONVERT cloud-only accounts against the throttling emulator (time scale $BENCH_TIME_SCALE)"
convert="$BENCH_LAB/convert"
conv_filter=$(python3 - "$BENCH_CONVERT" "$width" <<'PY'
import sys
# An LDAP filter matching exactly uid=bulk1..bulkN (zero-padded to width), as prefix blocks;
# bulk0 does not exist, so the blocks start at 0.
n, w = int(sys.argv[1]), int(sys.argv[2])
out, start = [], 0
while start <= n:
    size = 1
    while start % (size * 10) == 0 and start + size * 10 - 1 <= n:
        size *= 10
    digits = len(str(size)) - 1
    num = str(start).zfill(w)
    out.append("(uid=bulk" + (num[: w - digits] + "*" if digits else num) + ")")
    start += size
print("(&(objectClass=inetOrgPerson)(|" + "".join(out) + "))")
PY
)
latency_scaled=$(python3 -c "import sys; lo, hi = (float(x) for x in sys.argv[1].split(',')); s = float(sys.argv[2]); print('[%d,%d]' % (round(lo * s), round(hi * s)))" "$BENCH_LATENCY_MS" "$BENCH_TIME_SCALE")
python3 "$here/bench/tenant.py" "$emu_dir/tenant-convert.json" "$client_id" "$BENCH_GRAPH_SECRET" \
    --users "$BENCH_CONVERT" --width "$width" --serial $((BENCH_SERIAL_SAMPLE + BENCH_SERIAL_REAL_SAMPLE))
start_emulator "$emu_dir/tenant-convert.json"
write_config "$convert" "$conv_filter" "$BENCH_CONCURRENCY"
control -X POST "$base/_emulator/time-scale" -d "{\"timeScale\":$BENCH_TIME_SCALE}" >/dev/null
control -X POST "$base/_emulator/faults" -d "{\"latencyMs\":$latency_scaled,\"rate\":0,\"kinds\":[]}" >/dev/null
control -X POST "$base/_emulator/throttle/reset" >/dev/null
control -X DELETE "$base/_emulator/requests" >/dev/null
# The pacer learns the emulator's time scale from here (a rehearsal knob; real Graph is 1.0).
B2BSYNC_GRAPH_BUDGET_TIME_SCALE=$BENCH_TIME_SCALE timed_run "$convert" convert run
control "$base/_emulator/requests" >"$convert/convert.requests.json"
control "$base/_emulator/tenant" >"$convert/tenant-after.json"

say "5. The serial reference converter ($BENCH_SERIAL_SAMPLE accounts, one request at a time)"
control -X POST "$base/_emulator/throttle/reset" >/dev/null
control -X DELETE "$base/_emulator/requests" >/dev/null
python3 "$here/bench/serial-convert.py" --base "$base" --ca "$emu_dir/graph-ca.pem" --tenant "$tenant_id" \
    --client-id "$client_id" --count "$BENCH_SERIAL_SAMPLE" >"$convert/serial.json"
control "$base/_emulator/requests" >"$convert/serial.requests.json"

say "5b. The serial converter at time scale 1 with the real latency ($BENCH_SERIAL_REAL_SAMPLE accounts)"
# Its per-request overhead (Python, TLS, the emulator) does not scale with the latency, which
# flatters b2bsync's ratio in a scaled run; this measures the serial rate unscaled.
control -X POST "$base/_emulator/time-scale" -d '{"timeScale":1}' >/dev/null
control -X POST "$base/_emulator/faults" -d "{\"latencyMs\":[${BENCH_LATENCY_MS%,*},${BENCH_LATENCY_MS#*,}],\"rate\":0,\"kinds\":[]}" >/dev/null
python3 "$here/bench/serial-convert.py" --base "$base" --ca "$emu_dir/graph-ca.pem" --tenant "$tenant_id" \
    --client-id "$client_id" --count "$BENCH_SERIAL_REAL_SAMPLE" --first $((BENCH_SERIAL_SAMPLE + 1)) >"$convert/serial-real.json"

# ================================================================================================
say "Results"
python3 "$here/bench/report.py" \
    --users "$BENCH_USERS" --convert "$BENCH_CONVERT" --time-scale "$BENCH_TIME_SCALE" \
    --latency "$BENCH_LATENCY_MS" --latency-scaled "$latency_scaled" --concurrency "$BENCH_CONCURRENCY" \
    --nochange "$nochange" --convert-dir "$convert" --scale-dir "$BENCH_LAB" \
    --ldap-b2bsync "$best_b2b" --ldap-ldapsearch "$best_ls" | tee "$results"
note "(saved in $results; logs and request logs under $BENCH_LAB)"
