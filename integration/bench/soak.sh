#!/usr/bin/env bash
# Soak test: Portico under 10 minutes of mixed traffic (keep-alive HTTP/1.1
# and h2, a full TLS handshake per request, websockets, a reload every 30 s,
# one upstream flapping every 5 s). Fails (exit 1) if a request to a healthy
# upstream failed or Portico's goroutines or RSS grew. Not part of
# `make test`.
#   integration/bench/soak.sh                 # 10 minutes
#   DURATION=60s integration/bench/soak.sh    # a smoke test
# Extra flags for the soak program go in SOAK_FLAGS, e.g.
#   SOAK_FLAGS="-pause 0"                     # every client as fast as it can
# Output (summary.txt, samples.csv, portico.log) goes to
# integration/bench/out/soak/<date>/ (gitignored).
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10m}
out="integration/bench/out/soak/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "building portico and the soak program"
go build -o "$work/portico" ./cmd/portico
go build -o "$work/soak" ./integration/bench/soak

echo "running for $DURATION; output in $out"
status=0
# shellcheck disable=SC2086 # SOAK_FLAGS is a list of flags
"$work/soak" -portico "$work/portico" -duration "$DURATION" -out "$out" ${SOAK_FLAGS:-} 2>&1 |
  tee "$out/summary.txt" || status=$?
echo "output: $out"
exit "$status"
