#!/usr/bin/env bash
# Runs Microsoft's JavaScript clients (msal-node, @azure/identity and
# @microsoft/microsoft-graph-client from npm, pinned in tests/node/package-lock.json) against
# the Graph emulator. Installs Debian's nodejs and npm when node is missing, installs the
# packages with `npm ci`, builds target/debug/graph-emulator if needed, generates an app
# certificate with openssl (never committed), starts the emulator on a free port, runs
# `node --test` and stops the emulator it started. Exits non-zero on any failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tests="$root/tests/node"
work="$(mktemp -d "${TMPDIR:-/tmp}/b2bsync-nodeclients.XXXXXX")"
emulator_pid=""

# On exit: stop the emulator this script started (if it still runs), remove the scratch files.
stop() {
    [[ -z "$emulator_pid" ]] || { kill -TERM "$emulator_pid" 2>/dev/null && wait "$emulator_pid"; } || true
    rm -rf "$work"
}
trap stop EXIT

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "test-node-clients: installing Debian's nodejs and npm" >&2
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi

# Reinstall only when the lock file changed since the last install.
if [[ ! -f "$tests/node_modules/.package-lock.json" || "$tests/package-lock.json" -nt "$tests/node_modules/.package-lock.json" ]]; then
    echo "test-node-clients: npm ci in tests/node" >&2
    (cd "$tests" && npm ci --no-audit --no-fund --loglevel=error)
fi

emulator="$root/target/debug/graph-emulator"
if [[ ! -x "$emulator" || -n "$(find "$root/crates/graph-emulator" -newer "$emulator" \( -name '*.rs' -o -name Cargo.toml \) -print -quit)" ]]; then
    (cd "$root" && cargo build --quiet -p graph-emulator --bin graph-emulator)
fi

# App certificate for the certificate-credential tests: a fresh RSA key and a self-signed
# certificate for it, thrown away with $work.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/app-key.pem" 2>/dev/null
openssl req -new -x509 -key "$work/app-key.pem" -days 2 -subj "/CN=b2bsync node client test" \
    -out "$work/app-cert.pem"
cat "$work/app-key.pem" "$work/app-cert.pem" > "$work/app-cert-and-key.pem"

# The contract fixture plus the certificate and some generated users for paging.
node - "$root/tests/fixtures/tenant-contract.json" "$work/app-cert.pem" "$work/tenant.json" <<'JS'
const fs = require("node:fs");
const [fixture, cert, out] = process.argv.slice(2);
const tenant = JSON.parse(fs.readFileSync(fixture, "utf8"));
tenant.apps[0].certificates = [fs.readFileSync(cert, "ascii")];
for (let i = 0; i < 16; i++) {
  const n = String(i).padStart(2, "0");
  tenant.users.push({
    id: `d0000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
    userPrincipalName: `js${n}@contoso.example`,
    displayName: `Node generated ${n}`,
    mail: `js${n}@partner.example`,
  });
}
fs.writeFileSync(out, JSON.stringify(tenant, null, 1));
JS

"$emulator" --listen 127.0.0.1:0 --tenant "$work/tenant.json" --ca-out "$work/ca.pem" \
    > "$work/emulator.out" 2> "$work/emulator.err" &
emulator_pid=$!
# The ready line: "graph-emulator: listening on https://127.0.0.1:PORT (tenant ID, N users)".
if ! timeout 10 grep -q -m1 "listening on" <(tail -n +1 -f "$work/emulator.out" --pid "$emulator_pid"); then
    echo "test-node-clients: the emulator did not start" >&2
    cat "$work/emulator.err" >&2
    exit 1
fi
line="$(head -n1 "$work/emulator.out")"
echo "$line"
read -r _ _ _ base_url _ tenant users _ <<<"${line//[(),]/ }"

export NODE_EXTRA_CA_CERTS="$work/ca.pem"
export EMU_BASE_URL="$base_url" EMU_TENANT="$tenant" EMU_USERS="$users"
export EMU_CERT="$work/app-cert.pem" EMU_KEY="$work/app-key.pem" EMU_CERT_AND_KEY="$work/app-cert-and-key.pem"
status=0
(cd "$tests" && node --test clients.test.js) || status=$?
if [[ $status -ne 0 ]]; then
    echo "test-node-clients: emulator log:" >&2
    tail -n 50 "$work/emulator.err" >&2
fi
exit $status
