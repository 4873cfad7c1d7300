#!/usr/bin/env bash
# Measures Portico's start-up with N certificates already in storage (an RSA
# and an ECDSA certificate per name, from the local CA), for the file and the
# Redis backend, and its memory per cached certificate. Prints one table per
# run and a summary: when every stored name is servable ("all servable"; a
# name the start-up load has not reached is loaded by its first handshake),
# how long such first handshakes take, when everything is loaded ("names
# managed"), and RSS per certificate beyond its own bytes. Not part of
# `make test` (about a minute per run at N=10000; several at N=100000).
#   integration/bench/scale.sh            # N=10000, file and redis
#   FULL=1 integration/bench/scale.sh     # also N=100000
#   NS="1000 5000" BACKENDS=file integration/bench/scale.sh
# Extra flags for the scale program go in SCALE_FLAGS, e.g.
#   SCALE_FLAGS="-steady 135s -profile /tmp/scale-prof"  # live heap after the
#   runtime's forced GC (+2.3 min per run), CPU and heap profiles of an
#   in-process load.
#   SCALE_FLAGS=-pairs  # store certificates as Portico writes them (with a
#   .pair value each); by default the older layout without pairs.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ -z "${NS:-}" ]]; then
  NS=10000
  [[ "${FULL:-}" == 1 ]] && NS="10000 100000"
fi
BACKENDS=${BACKENDS:-"file redis"}

work=$(mktemp -d)
redis_pid=
cleanup() {
  if [[ -n "$redis_pid" ]]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "building portico and the scale program"
go build -o "$work/portico" ./cmd/portico
go build -o "$work/scale" ./integration/bench/scale

redis_url=
if [[ " $BACKENDS " == *" redis "* ]]; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "installing redis-server"
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  fi
  port=$("$work/scale" -free-port)
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" --logfile "$work/redis.log" --daemonize no &
  redis_pid=$!
  redis_url="redis://127.0.0.1:$port/0"
  echo "redis-server pid $redis_pid on 127.0.0.1:$port"
fi

results="$work/results.tsv"
for n in $NS; do
  for b in $BACKENDS; do
    echo
    echo "== backend=$b N=$n"
    args=(-portico "$work/portico" -n "$n" -backend "$b" -results "$results")
    [[ "$b" == redis ]] && args+=(-redis-url "$redis_url" -redis-pid "$redis_pid")
    start=$SECONDS
    # shellcheck disable=SC2086 # SCALE_FLAGS is a list of flags
    "$work/scale" "${args[@]}" ${SCALE_FLAGS:-} || echo "!! backend=$b N=$n failed"
    echo "(run took $((SECONDS - start)) s)"
    if [[ "$b" == redis && -n "$redis_pid" ]]; then
      echo "redis used_memory after the run: $(redis-cli -p "$port" info memory 2>/dev/null |
        sed -n 's/^used_memory_human:\(.*\)\r$/\1/p' || true)"
    fi
  done
done

echo
echo "== summary"
if [[ -s "$results" ]]; then
  "$work/scale" -summarize "$results"
else
  echo "no run completed"
fi
