#!/usr/bin/env bash
# Benchmark manifest-server against nginx serving the same store (issue #3).
#
#   bench/server.sh                 # 10 s per run, 3 rounds, median reported
#   DURATION=30s ROUNDS=5 bench/server.sh
#   NGINX_TUNED=1 bench/server.sh   # against a tuned nginx
#
# Two workloads, each with `wrk -t2 -c32`:
#   (a) idle polls: GET cohorts/stable.json with If-None-Match set to the
#       server's own ETag, so every answer is a 304 (what a fleet of idle
#       devices costs);
#   (b) downloads: GET a 1 MiB artifact (200, full body).
# Targets: ours/nginx >= 1.0 on (a), >= 0.8 on (b).
#
# nginx runs with a private config (worker_processes auto, sendfile on,
# etag on, access_log off; NGINX_TUNED=1 for more, see below); ours runs without --keys (the store's signature
# is not real) and without --access-log. Both listen on 127.0.0.1. Installs
# nginx and wrk with apt-get when they are missing. Not part of CI: it takes
# minutes and its numbers depend on the machine.
set -euo pipefail

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
NGINX_PORT=${NGINX_PORT:-18081}
# NGINX_TUNED=1 adds what an nginx tuned for this job would have on top of
# the issue's baseline: open_file_cache (no open/fstat/close per request),
# unlimited keep-alive requests (the default closes every 1000th), and
# reuseport (connections spread evenly over the workers).
if [ "${NGINX_TUNED:-0}" = 1 ]; then
    NGINX_LABEL="tuned: open_file_cache, keepalive_requests 1000000, reuseport"
    NGINX_EXTRA="open_file_cache max=1000 inactive=60s; keepalive_requests 1000000;"
    NGINX_LISTEN_OPTS="reuseport"
else
    NGINX_LABEL="baseline: worker_processes auto, sendfile, etag, access_log off"
    NGINX_EXTRA=""
    NGINX_LISTEN_OPTS=""
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)

# ---------------------------------------------------------------- tools
NGINX=$(command -v nginx || true)
[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
if [ -z "$NGINX" ] || ! command -v wrk >/dev/null; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    echo "installing nginx and wrk with apt-get" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx wrk curl >/dev/null
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
for tool in curl sha256sum wrk; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

echo "building manifest-server (release)" >&2
(cd "$ROOT" && cargo build --release -q -p manifest-server)
SERVER="$ROOT/target/release/manifest-server"

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d /tmp/bench-server.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- store
# Plain shell, no keys: the bench measures serving, not verification.
STORE="$WORK/store"
mkdir -p "$STORE/cohorts" "$STORE/releases" "$STORE/artifacts"
cat >"$STORE/cohorts/stable.json" <<'EOF'
{
  "schema": 1,
  "kind": "cohort",
  "product": "neopro",
  "cohort": "stable",
  "sequence": 42,
  "issued_at": "2026-11-21T10:00:00Z",
  "expires_at": "2026-12-21T10:00:00Z",
  "target": {
    "version": "1.3.0",
    "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    "size": 812
  },
  "rollout": {
    "percent": 10
  },
  "allow_downgrade": false
}
EOF
cat >"$STORE/cohorts/stable.json.minisig" <<'EOF'
untrusted comment: signature from minisign secret key (bench placeholder)
RUQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==
trusted comment: timestamp:0	file:stable.json	hashed
AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==
EOF
head -c $((1 << 20)) /dev/urandom >"$WORK/artifact"
ARTIFACT=$(sha256sum "$WORK/artifact" | cut -d' ' -f1)
mv "$WORK/artifact" "$STORE/artifacts/$ARTIFACT"
# nginx workers run as an unprivileged user: make the tree readable.
chmod 755 "$WORK"
chmod -R a+rX "$STORE"

# ---------------------------------------------------------------- servers
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    etag on;
    $NGINX_EXTRA
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    types { application/json json; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NGINX_PORT $NGINX_LISTEN_OPTS;
        root $STORE;
        autoindex off;
        location /cohorts/ { add_header Cache-Control no-cache; }
        location /artifacts/ { add_header Cache-Control "public, max-age=31536000, immutable"; }
    }
}
EOF
"$NGINX" -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
PIDS+=($!)

"$SERVER" --store "$STORE" --listen 127.0.0.1:0 >"$WORK/ours.out" 2>"$WORK/ours.err" &
PIDS+=($!)

OURS=""
NGINX_URL="http://127.0.0.1:$NGINX_PORT"
for _ in $(seq 100); do
    line=$(head -n1 "$WORK/ours.out" 2>/dev/null || true)
    [ -n "$line" ] && OURS=${line#listening on }
    if [ -n "$OURS" ] && curl -fsS -o /dev/null "$NGINX_URL/cohorts/stable.json" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if [ -z "$OURS" ] || ! curl -fsS -o /dev/null "$NGINX_URL/cohorts/stable.json"; then
    echo "servers did not start:" >&2
    cat "$WORK/ours.err" "$WORK/nginx/error.log" >&2 || true
    exit 1
fi

etag_of() {
    curl -fsSI "$1" | tr -d '\r' | awk 'tolower($1) == "etag:" { print $2 }'
}

status_with_etag() {
    curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $2" "$1"
}

# ---------------------------------------------------------------- runs
# wrk prints "Requests/sec: N" and, when any answer is not 2xx/3xx, a
# "Non-2xx or 3xx responses" line: that run is an error, not a number.
run_wrk() {
    local out
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "$@")
    if grep -q "Non-2xx or 3xx" <<<"$out" || grep -q "Socket errors" <<<"$out"; then
        echo "wrk reported errors:" >&2
        echo "$out" >&2
        exit 1
    fi
    awk '/^Requests\/sec:/ { print $2 }' <<<"$out"
}

median() {
    tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

declare -A URL ETAG RUNS RESULT
echo "machine: $(nproc) cores, $(uname -srm); nginx $("$NGINX" -v 2>&1 | cut -d/ -f2) ($NGINX_LABEL)" >&2
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS interleaved rounds" >&2
for name in nginx ours; do
    if [ "$name" = nginx ]; then base=$NGINX_URL; else base=$OURS; fi
    URL[$name]=$base
    ETAG[$name]=$(etag_of "$base/cohorts/stable.json")
    code=$(status_with_etag "$base/cohorts/stable.json" "${ETAG[$name]}")
    [ "$code" = 304 ] || { echo "$name answered $code, not 304, to If-None-Match: ${ETAG[$name]}" >&2; exit 1; }
    size=$(curl -fsS "$base/artifacts/$ARTIFACT" | wc -c)
    [ "$size" -eq $((1 << 20)) ] || { echo "$name served $size bytes of the artifact" >&2; exit 1; }
done

# Rounds interleave the two servers, so a burst of load from something else
# on the machine hits both rather than one.
for round in $(seq "$ROUNDS"); do
    for label in poll-304 get-1MiB; do
        for name in nginx ours; do
            if [ "$label" = poll-304 ]; then
                rps=$(run_wrk -H "If-None-Match: ${ETAG[$name]}" "${URL[$name]}/cohorts/stable.json")
            else
                rps=$(run_wrk "${URL[$name]}/artifacts/$ARTIFACT")
            fi
            RUNS[$name.$label]="${RUNS[$name.$label]:-} $rps"
            printf '  round %d  %-6s %-9s %10.0f req/s\n' "$round" "$name" "$label" "$rps" >&2
        done
    done
done
for key in "${!RUNS[@]}"; do
    RESULT[$key]=$(median <<<"${RUNS[$key]}")
done

echo
printf '%-22s %12s %12s %8s %8s\n' workload "nginx req/s" "ours req/s" ratio target
for label in poll-304 get-1MiB; do
    target=1.0
    [ "$label" = get-1MiB ] && target=0.8
    awk -v l="$label" -v n="${RESULT[nginx.$label]}" -v o="${RESULT[ours.$label]}" -v t="$target" \
        'BEGIN { r = o / n; printf "%-22s %12.0f %12.0f %7.2fx %7.1fx %s\n", l, n, o, r, t, (r >= t ? "ok" : "MISSED") }'
done
