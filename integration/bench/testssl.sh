#!/usr/bin/env bash
# Runs testssl.sh (Debian package testssl.sh) against Portico serving RSA and
# ECDSA certificates from its local CA, and prints the findings that are not
# OK. Not part of `make test` (it takes a few minutes).
#   integration/bench/testssl.sh [output-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-integration/bench/out/testssl}
mkdir -p "$out"
command -v testssl >/dev/null 2>&1 || command -v testssl.sh >/dev/null 2>&1 || {
  echo "installing testssl.sh"; apt-get install -y -qq testssl.sh >/dev/null; }
tssl=$(command -v testssl || command -v testssl.sh)

work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/portico" ./cmd/portico
cat > "$work/portico.toml" <<TOML
[acme]
ca = "local"
[listen]
http = "127.0.0.1:18080"
https = "127.0.0.1:18443"
[storage]
path = "$work/data"
[[site]]
hosts = ["localhost"]
respond = "ok"
hsts_max_age = "1440h"
TOML
"$work/portico" run -config "$work/portico.toml" >"$out/portico.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sk --resolve localhost:18443:127.0.0.1 https://localhost:18443/ >/dev/null 2>&1 && break
  sleep 0.1
done
"$tssl" --quiet --color 0 --warnings off --jsonfile "$out/testssl.json" \
  --ip 127.0.0.1 https://localhost:18443/ >"$out/testssl.txt" 2>&1 || true
echo "full report: $out/testssl.txt"
echo "findings worse than OK/INFO (severity id finding):"
python3 - "$out/testssl.json" <<'PY'
import json, sys
for f in json.load(open(sys.argv[1])):
    if f.get("severity") not in ("OK", "INFO", "DEBUG"):
        print(f'{f["severity"]:8} {f["id"]:32} {f["finding"][:100]}')
PY
