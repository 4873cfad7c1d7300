#!/usr/bin/env bash
# Portico against nginx as a TLS-terminating reverse proxy in front of one
# HTTP/1.1 upstream that answers every request with 1 KiB, on this machine:
# static certificates (an ECDSA P-256 and an RSA-2048 one for bench.test), no
# access logs, nginx with one worker and an upstream keep-alive pool.
#
# In rounds, each measurement of nginx next to the same of Portico, the
# order swapped every round (nginx first, then Portico first, …):
#   wrk      HTTP/1.1 keep-alive load (2 s warm-up, then -t2 -c64 for 10 s):
#            req/s, p99 latency, the proxy's CPU per request
#   handshake full TLS 1.3 handshakes (X25519, no resumption), 32 workers,
#            10 s offering only ECDSA signature schemes, 10 s only RSA-PSS:
#            handshakes/s, the proxy's CPU per handshake
#   h2load   HTTP/2 load (-c16 -m8 -t1, 8 s): req/s, CPU per request
#   VmHWM    peak RSS of the proxy's processes after the round's load
# then prints medians with min–max and the Portico/nginx ratios. Raw outputs
# go to integration/bench/out/compare-<time>/ (gitignored).
#
#   integration/bench/compare.sh                 # about 6–8 minutes
#   ROUNDS=5 integration/bench/compare.sh
#   PORTICO_BIN=/tmp/portico-old integration/bench/compare.sh   # a binary built elsewhere
#   PROFILE=1 integration/bench/compare.sh       # also perf profiles under wrk, after the rounds
#   ROUNDS=1 WARMUP=1 WRK_DURATION=2 HS_DURATION=2 H2_DURATION=2 integration/bench/compare.sh   # smoke test
#   ACCESS_LOG=1 integration/bench/compare.sh    # both write an access log to a file
#                                                # (nginx: combined, unbuffered; Portico: JSON)
#   ONLY_WRK=1 integration/bench/compare.sh      # HTTP/1.1 only: no handshakes, no h2load
#   CONNECT=ip integration/bench/compare.sh      # the old way: wrk to https://127.0.0.1:PORT/ with
#                                                # -H 'Host: bench.test' (SNI 127.0.0.1, Host without port)
#
# By default the clients connect as a browser or curl would: wrk and h2load
# to https://bench.test:PORT/, so SNI bench.test and Host bench.test:PORT.
# When bench.test does not resolve to 127.0.0.1, they run in a private mount
# namespace (unshare -m, root) whose /etc/hosts says so; the machine's own
# /etc/hosts is not touched.
#
# Installs nginx, wrk and nghttp2-client (h2load) with apt-get when missing.
# See integration/bench/README.md for what each number means.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2}
WRK_DURATION=${WRK_DURATION:-10}
HS_DURATION=${HS_DURATION:-10}
HS_WORKERS=${HS_WORKERS:-32}
H2_DURATION=${H2_DURATION:-8}
PROFILE=${PROFILE:-}
ACCESS_LOG=${ACCESS_LOG:-}
ONLY_WRK=${ONLY_WRK:-}
CONNECT=${CONNECT:-name}
HOST=bench.test

out=${OUT:-integration/bench/out/compare-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
chmod 755 "$work"
results="$out/results.tsv"
: >"$results"

pids_to_stop=()
cleanup() {
  local p
  for p in "${pids_to_stop[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${pids_to_stop[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  if [[ "${KEEP:-}" == 1 ]]; then
    echo "kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

log() { echo "$*" | tee -a "$out/run.log"; }

# --- tools ------------------------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [[ -n "$PROFILE" ]] && ! command -v perf >/dev/null 2>&1; then
  missing+=(linux-perf)
fi
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH=$PATH:/usr/sbin

if [[ -n "${PORTICO_BIN:-}" ]]; then
  log "using portico binary $PORTICO_BIN; building the helpers"
  cp "$PORTICO_BIN" "$work/portico"
else
  log "building portico and the helpers"
  go build -o "$work/portico" ./cmd/portico
fi
go build -o "$work/" ./integration/bench/compare/upstream ./integration/bench/compare/handshake ./integration/bench/compare/table

clk_tck=$(getconf CLK_TCK)
{
  echo "date: $(date -u)"
  echo "portico: ${PORTICO_BIN:-$(git describe --always --dirty 2>/dev/null || echo unknown)}"
  go version
  nginx -v 2>&1
  wrk -v 2>&1 | head -1 || true
  h2load --version
  openssl version
  echo "kernel: $(uname -r), cpus: $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
  echo "rounds=$ROUNDS warmup=${WARMUP}s wrk=${WRK_DURATION}s handshakes=${HS_DURATION}s x $HS_WORKERS workers h2load=${H2_DURATION}s connect=$CONNECT access_log=${ACCESS_LOG:-off}"
} >"$out/versions.txt"
cat "$out/versions.txt"

# --- certificates -------------------------------------------------------------
# 127.0.0.1 is in the SANs too: wrk connects to https://127.0.0.1:PORT/ and
# sends the URL's host as SNI.
san="subjectAltName=DNS:$HOST,IP:127.0.0.1"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=$HOST" -addext "$san" -keyout "$work/ecdsa.key" -out "$work/ecdsa.crt" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
  -subj "/CN=$HOST" -addext "$san" -keyout "$work/rsa.key" -out "$work/rsa.crt" 2>/dev/null

# --- how the clients reach bench.test ------------------------------------------
# as_client runs a load generator so that bench.test resolves to 127.0.0.1.
in_namespace=
case "$CONNECT" in
name)
  if ! getent hosts "$HOST" | grep -q '^127\.0\.0\.1[[:space:]]'; then
    printf '127.0.0.1 %s\n' "$HOST" >"$work/hosts"
    if ! unshare -m sh -c 'mount --bind "$0" /etc/hosts && getent hosts "$1"' "$work/hosts" "$HOST" >/dev/null 2>&1; then
      echo "$HOST does not resolve to 127.0.0.1 and unshare -m is not allowed here (it needs root):" >&2
      echo "add '127.0.0.1 $HOST' to /etc/hosts, or run with CONNECT=ip" >&2
      exit 1
    fi
    in_namespace=1
  fi
  ;;
ip) ;;
*)
  echo "CONNECT=$CONNECT: want name (SNI and Host bench.test, the default) or ip (https://127.0.0.1 with a Host header)" >&2
  exit 1
  ;;
esac
as_client() {
  if [[ -n "$in_namespace" ]]; then
    unshare -m sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$work/hosts" "$@"
  else
    "$@"
  fi
}
wrk_target() { # port → sets wrk_args, wrk's target arguments
  if [[ "$CONNECT" == name ]]; then
    wrk_args=("https://$HOST:$1/")
  else
    wrk_args=(-H "Host: $HOST" "https://127.0.0.1:$1/")
  fi
}

# --- upstream -------------------------------------------------------------------
"$work/upstream" -addr 127.0.0.1:0 -size 1024 -addr-file "$work/upstream.addr" >/dev/null &
pids_to_stop+=($!)
for _ in $(seq 50); do [[ -s "$work/upstream.addr" ]] && break; sleep 0.1; done
upstream=$(cat "$work/upstream.addr")
log "upstream on $upstream (1 KiB answers)"

read -r nginx_port portico_port < <("$work/upstream" -free-ports 2 | paste -sd' ')

# --- nginx ------------------------------------------------------------------------
mkdir -p "$work/nginx"
nginx_version=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
if [[ "$(printf '%s\n' 1.25.1 "$nginx_version" | sort -V | head -1)" == 1.25.1 ]]; then
  listen_h2="listen 127.0.0.1:$nginx_port ssl default_server; http2 on;"
else
  listen_h2="listen 127.0.0.1:$nginx_port ssl http2 default_server;"
fi
user_line=
if [[ "$(id -u)" == 0 ]]; then
  user_line="user $(id -un) $(id -gn);" # workers run as the current user, not nobody
fi
nginx_access_log="access_log off;"
portico_access_log=""
if [[ -n "$ACCESS_LOG" ]]; then
  nginx_access_log="access_log $work/nginx/access.log;"
  portico_access_log=$(printf '[log]\naccess = "%s/portico-access.log"\naccess_format = "json"' "$work")
fi
cat >"$work/nginx/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events {
  worker_connections 4096;
}
http {
  $nginx_access_log
  client_body_temp_path $work/nginx/client_body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;

  upstream backend {
    server $upstream;
    keepalive 64;
  }
  server {
    $listen_h2
    server_name $HOST;
    # nginx closes a client connection after 1000 requests by default (HTTP/2
    # included, with a GOAWAY) and h2load does not reconnect: without this,
    # h2load measures that limit, not nginx. Portico has no such limit.
    keepalive_requests 1000000;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate $work/ecdsa.crt;
    ssl_certificate_key $work/ecdsa.key;
    ssl_certificate $work/rsa.crt;
    ssl_certificate_key $work/rsa.key;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
cp "$work/nginx/nginx.conf" "$out/nginx.conf"
nginx -t -q -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log"
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
nginx_pid=$!
pids_to_stop+=("$nginx_pid")

# --- Portico ------------------------------------------------------------------------
mkdir -p "$work/portico-data"
cat >"$work/portico.toml" <<EOF
# no [acme]: bench.test is served from the operator certificates below
[listen]
http = ""
https = "127.0.0.1:$portico_port"
admin = ""
default_sni = "$HOST"

[storage]
path = "$work/portico-data"

$portico_access_log

[[certificate]]
cert = "$work/ecdsa.crt"
key = "$work/ecdsa.key"

[[certificate]]
cert = "$work/rsa.crt"
key = "$work/rsa.key"

[[site]]
hosts = ["$HOST"]
upstreams = ["http://$upstream"]
EOF
cp "$work/portico.toml" "$out/portico.toml"
"$work/portico" validate -config "$work/portico.toml" >"$out/portico-validate.txt"
"$work/portico" run -config "$work/portico.toml" 2>"$out/portico.log" &
portico_pid=$!
pids_to_stop+=("$portico_pid")

wait_up() { # name port pid
  local i code
  for i in $(seq 100); do
    if ! kill -0 "$3" 2>/dev/null; then
      echo "$1 exited; see $out" >&2
      exit 1
    fi
    code=$(curl -sk -o /dev/null -w '%{http_code}' -H "Host: $HOST" "https://127.0.0.1:$2/" || true)
    [[ "$code" == 200 ]] && return 0
    sleep 0.1
  done
  echo "$1 did not answer 200 on port $2 (last: $code)" >&2
  exit 1
}
wait_up nginx "$nginx_port" "$nginx_pid"
wait_up portico "$portico_port" "$portico_pid"
nginx_pids="$nginx_pid $(pgrep -P "$nginx_pid" | paste -sd' ')"
log "nginx $nginx_version on 127.0.0.1:$nginx_port (pids $nginx_pids), portico on 127.0.0.1:$portico_port (pid $portico_pid)"

port_of() { if [[ $1 == nginx ]]; then echo "$nginx_port"; else echo "$portico_port"; fi; }
pids_of() { if [[ $1 == nginx ]]; then echo "$nginx_pids"; else echo "$portico_pid"; fi; }

# what each target negotiates with an OpenSSL client like wrk's (SNI as
# wrk sends it), and which certificate each handshake mode gets
wrk_sni=$HOST
[[ "$CONNECT" == ip ]] && wrk_sni=127.0.0.1
for t in nginx portico; do
  port=$(port_of $t)
  {
    echo "== $t, openssl s_client -servername $wrk_sni (as wrk)"
    openssl s_client -connect "127.0.0.1:$port" -servername "$wrk_sni" </dev/null 2>/dev/null |
      grep -E '^(New,|Peer signature type|Server Temp Key|Server public key)' || true
    for s in ecdsa rsa; do
      "$work/handshake" -check -addr "127.0.0.1:$port" -sni "$HOST" -sigalgs "$s"
    done
  } | tee -a "$out/tls-check.txt"
done
if [[ $(grep -c 'offered=\(ecdsa\|rsa\) served=\1' "$out/tls-check.txt") != 4 ]]; then
  echo "a target did not serve the certificate type its handshake mode forces: see $out/tls-check.txt" >&2
  exit 1
fi

# --- measurements -------------------------------------------------------------------
cpu_ticks() { # pids... → utime+stime, in clock ticks
  local p sum=0 v
  for p in "$@"; do
    v=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat")
    sum=$((sum + v))
  done
  echo "$sum"
}
hwm_mib() { # pids... → sum of VmHWM, MiB
  local p
  for p in "$@"; do
    awk '/^VmHWM:/{print $2}' "/proc/$p/status"
  done | awk '{s += $1} END {printf "%.1f", s / 1024}'
}
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$results"; }
calc() { awk "BEGIN {printf \"%.4f\", $1}"; }
to_ms() { # wrk latency such as 812.00us, 4.12ms, 1.02s → ms
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
    printf "%.3f", n }'
}

h2_target_args() { # port → h2load arguments for https://bench.test on 127.0.0.1:port
  if [[ "$CONNECT" == name ]]; then
    echo "https://$HOST:$1/"
  elif h2load --help 2>&1 | grep -q -- '--sni'; then
    echo "--sni $HOST https://127.0.0.1:$1/"
  elif h2load --help 2>&1 | grep -q -- '--connect-to'; then
    echo "--connect-to=127.0.0.1:$1 https://$HOST:$1/"
  else
    echo "https://127.0.0.1:$1/" # no SNI: both serve bench.test by default
  fi
}

# Each phase measures one target; the rounds run each phase for both
# targets back to back (see below).
setup_target() { # target → port, pids
  port=$(port_of "$1")
  # shellcheck disable=SC2207 # pids are numbers
  pids=($(pids_of "$1"))
}

measure_wrk() { # target round: (a)+(b) wrk, HTTP/1.1 keep-alive
  local t=$1 r=$2 port pids f c0 c1 t0 t1 rps reqs p99 errs
  setup_target "$t"
  record "$t" "$r" load1 "$(cut -d' ' -f1 /proc/loadavg)"
  wrk_target "$port"
  as_client wrk -t2 -c64 -d"${WARMUP}s" "${wrk_args[@]}" >/dev/null
  f="$out/wrk-$t-$r.txt"
  c0=$(cpu_ticks "${pids[@]}")
  t0=$(date +%s.%N)
  as_client wrk -t2 -c64 -d"${WRK_DURATION}s" --latency "${wrk_args[@]}" >"$f"
  t1=$(date +%s.%N)
  c1=$(cpu_ticks "${pids[@]}")
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$f")
  reqs=$(awk '/requests in/ {print $1}' "$f")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$f")")
  errs=$(awk '/Socket errors:/ {gsub(/,/, ""); s += $4 + $6 + $8 + $10} /Non-2xx/ {s += $NF} END {print s + 0}' "$f")
  record "$t" "$r" wrk_rps "$rps"
  record "$t" "$r" wrk_p99_ms "$p99"
  record "$t" "$r" wrk_cpu_us "$(calc "($c1 - $c0) / $clk_tck * 1e6 / $reqs")"
  record "$t" "$r" wrk_cpu_pct "$(calc "($c1 - $c0) / $clk_tck / ($t1 - $t0) * 100")"
  record "$t" "$r" wrk_errors "$errs"
  log "  $t round $r: wrk $rps req/s, p99 ${p99} ms, errors $errs"
}

measure_hs() { # target round: (c) full handshakes, ECDSA then RSA
  local t=$1 r=$2 port pids f hs kind n total_errs=0
  setup_target "$t"
  for kind in ecdsa rsa; do
    f="$out/handshake-$kind-$t-$r.txt"
    "$work/handshake" -addr "127.0.0.1:$port" -sni "$HOST" -sigalgs "$kind" -workers "$HS_WORKERS" \
      -duration "${HS_DURATION}s" -pids "${pids[*]}" -clk-tck "$clk_tck" >"$f" || true
    hs=$(cat "$f")
    record "$t" "$r" "hs_${kind}_rate" "$(sed -n 's/.* rate=\([0-9.]*\).*/\1/p' <<<"$hs")"
    record "$t" "$r" "hs_${kind}_cpu_us" "$(sed -n 's/.* cpu_us_per_hs=\([0-9.]*\).*/\1/p' <<<"$hs")"
    n=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<<"$hs")
    total_errs=$((total_errs + ${n:-0}))
    if ! grep -q "served=$kind:[0-9]*\$\|served=$kind:[0-9]* " <<<"$hs"; then
      log "  !! $t round $r: $kind handshakes were not all served $kind: $hs"
    fi
    log "  $t round $r: $kind handshakes: $hs"
  done
  record "$t" "$r" hs_errors "$total_errs"
}

measure_h2() { # target round: (d) h2load, HTTP/2
  local t=$1 r=$2 port pids f c0 c1 reqs errs h2
  setup_target "$t"
  f="$out/h2load-$t-$r.txt"
  c0=$(cpu_ticks "${pids[@]}")
  # shellcheck disable=SC2046 # the target arguments are split on purpose
  as_client h2load -c16 -m8 -t1 -D"$H2_DURATION" $(h2_target_args "$port") >"$f" 2>&1 || true
  c1=$(cpu_ticks "${pids[@]}")
  h2=$(awk '/^finished in/ {gsub(/,/, ""); print $4}' "$f")
  reqs=$(awk '/^requests:/ {print $8}' "$f")
  errs=$(awk '/^requests:/ {print $10 + $12}' "$f")
  record "$t" "$r" h2_rps "${h2:-0}"
  if [[ -n "$reqs" && "$reqs" != 0 ]]; then
    record "$t" "$r" h2_cpu_us "$(calc "($c1 - $c0) / $clk_tck * 1e6 / $reqs")"
  fi
  record "$t" "$r" h2_errors "${errs:-0}"
  log "  $t round $r: h2load ${h2:-?} req/s, failed+errored ${errs:-?}"
}

# Each measurement of one target is next to the same measurement of the
# other, and the rounds alternate which goes first (nginx, Portico, then
# Portico, nginx, …): the machine's pace drifts over minutes, and a ratio
# of two runs seconds apart is the least touched by it.
phases=(wrk)
[[ -z "$ONLY_WRK" ]] && phases+=(hs h2)
start=$SECONDS
for r in $(seq "$ROUNDS"); do
  log "== round $r of $ROUNDS"
  order=(nginx portico)
  ((r % 2 == 0)) && order=(portico nginx)
  for phase in "${phases[@]}"; do
    for t in "${order[@]}"; do
      "measure_$phase" "$t" "$r"
    done
  done
  for t in nginx portico; do # (e) peak RSS so far
    setup_target "$t"
    record "$t" "$r" rss_mib "$(hwm_mib "${pids[@]}")"
  done
done
log "(rounds took $((SECONDS - start)) s)"

if [[ -n "$PROFILE" ]]; then
  # perf, sampling each target's processes under the same wrk load
  for t in nginx portico; do
    port=$(port_of "$t")
    perf record -q -F 999 -g -o "$work/perf-$t.data" -p "$(pids_of "$t" | tr ' ' ',')" -- sleep "$WRK_DURATION" 2>/dev/null &
    perf_pid=$!
    wrk_target "$port"
    as_client wrk -t2 -c64 -d"${WRK_DURATION}s" "${wrk_args[@]}" >/dev/null
    wait "$perf_pid" || true
    for view in "self --no-children --sort dso,symbol" "dso --no-children --sort dso" "children --children --sort symbol"; do
      # shellcheck disable=SC2086 # the view's options are split on purpose
      perf report -q -i "$work/perf-$t.data" --stdio -g none ${view#* } 2>/dev/null |
        grep -E '^ +[0-9]' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -50 >"$out/perf-$t-${view%% *}.txt" || true
    done
    log "perf profile of $t under wrk: $out/perf-$t-{self,dso,children}.txt"
  done
fi

cp "$work/nginx/error.log" "$out/nginx-error.log" 2>/dev/null || true
echo
"$work/table" -a nginx -b portico "$results" | tee "$out/table.txt"
echo
echo "raw results: $out"
