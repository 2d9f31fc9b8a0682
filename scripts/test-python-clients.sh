#!/usr/bin/env bash
# Runs Microsoft's Python clients (msal, azure-identity, msgraph-sdk from PyPI) against the
# Graph emulator. Creates or reuses a venv under ${B2BSYNC_LAB:-/tmp/b2bsync-lab}/venv,
# builds target/debug/graph-emulator if needed, generates an app certificate with openssl
# (never committed), starts the emulator on a free port, runs the unittest suite and stops
# the emulator it started. Exits non-zero on any failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lab="${B2BSYNC_LAB:-/tmp/b2bsync-lab}"
venv="$lab/venv"
work="$(mktemp -d "${TMPDIR:-/tmp}/b2bsync-pyclients.XXXXXX")"
emulator_pid=""

cleanup() {
    if [[ -n "$emulator_pid" ]] && kill -0 "$emulator_pid" 2>/dev/null; then
        kill -TERM "$emulator_pid"
        wait "$emulator_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$lab"
# msgraph-core's batch module imports `deprecated` without declaring it, hence the fourth package.
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import msgraph, msal, azure.identity, deprecated" 2>/dev/null; then
    echo "test-python-clients: installing msgraph-sdk, azure-identity, msal into $venv" >&2
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check msgraph-sdk azure-identity msal deprecated
fi

emulator="$root/target/debug/graph-emulator"
if [[ ! -x "$emulator" || -n "$(find "$root/crates/graph-emulator" -newer "$emulator" \( -name '*.rs' -o -name Cargo.toml \) -print -quit)" ]]; then
    (cd "$root" && cargo build --quiet -p graph-emulator --bin graph-emulator)
fi

# App certificate for the certificate-credential tests, made now and thrown away afterwards.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=b2bsync python client test" \
    -keyout "$work/app-key.pem" -out "$work/app-cert.pem" 2>/dev/null
cat "$work/app-key.pem" "$work/app-cert.pem" > "$work/app-cert-and-key.pem"

# The contract fixture plus the certificate and some generated users for paging.
python3 - "$root/tests/fixtures/tenant-contract.json" "$work/app-cert.pem" "$work/tenant.json" <<'PY'
import json, sys
fixture, cert, out = sys.argv[1:4]
tenant = json.load(open(fixture))
tenant["apps"][0]["certificates"] = [open(cert).read()]
for i in range(16):
    tenant["users"].append({
        "id": f"c0000000-0000-4000-8000-{i:012d}",
        "userPrincipalName": f"py{i:02d}@contoso.example",
        "displayName": f"Python generated {i:02d}",
        "mail": f"py{i:02d}@partner.example",
    })
json.dump(tenant, open(out, "w"), indent=1)
PY

"$emulator" --listen 127.0.0.1:0 --tenant "$work/tenant.json" --ca-out "$work/ca.pem" \
    > "$work/emulator.out" 2> "$work/emulator.err" &
emulator_pid=$!
for _ in $(seq 100); do
    grep -q "listening on" "$work/emulator.out" 2>/dev/null && break
    kill -0 "$emulator_pid" 2>/dev/null || { cat "$work/emulator.err" >&2; exit 1; }
    sleep 0.1
done
line="$(head -n1 "$work/emulator.out")"
echo "$line"
base_url="$(sed -n 's/.*listening on \(https:[^ ]*\) (tenant \([^,]*\), \([0-9]*\) users).*/\1/p' <<<"$line")"
tenant="$(sed -n 's/.*(tenant \([^,]*\),.*/\1/p' <<<"$line")"
users="$(sed -n 's/.*, \([0-9]*\) users).*/\1/p' <<<"$line")"
[[ -n "$base_url" ]] || { echo "test-python-clients: the emulator did not start" >&2; cat "$work/emulator.err" >&2; exit 1; }

export SSL_CERT_FILE="$work/ca.pem" REQUESTS_CA_BUNDLE="$work/ca.pem"
export EMU_BASE_URL="$base_url" EMU_TENANT="$tenant" EMU_USERS="$users" EMU_CA="$work/ca.pem"
export EMU_CERT="$work/app-cert.pem" EMU_KEY="$work/app-key.pem" EMU_CERT_AND_KEY="$work/app-cert-and-key.pem"
status=0
(cd "$root/tests/python" && "$venv/bin/python" -m unittest -v test_msgraph_sdk) || status=$?
if [[ $status -ne 0 ]]; then
    echo "test-python-clients: emulator log:" >&2
    tail -n 50 "$work/emulator.err" >&2
fi
exit $status
