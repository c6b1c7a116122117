#!/usr/bin/env bash
# Render the fleet page (GET /, docs/REPORTS.md) of a real manifest-server
# in headless Chromium and save it as docs/fleet-page.png.
#
#   docs/fleet-screenshot.sh              # writes docs/fleet-page.png
#   OUT=/tmp/page.png docs/fleet-screenshot.sh
#
# Steps: install Debian's `chromium` with apt-get when it is missing; build
# manifest-server; start it on 127.0.0.1 with a store and a reports
# database in a temp dir; POST the reports of 60 devices in two cohorts
# (canary has taken 2.6.0 with two rollbacks and a silent device; stable is
# at the 25 % step of 2.4.1 -> 2.5.0 with a rollback, a failed download and
# two devices offline for days); screenshot the page at 1280x900; stop the
# server and delete the temp dir. Needs curl; not part of CI.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/docs/fleet-page.png}
TOKEN=screenshot-token-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')

# ---------------------------------------------------------------- tools
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROMIUM" ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    echo "installing chromium with apt-get" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
    CHROMIUM=$(command -v chromium)
fi
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

echo "building manifest-server" >&2
cargo build -q --manifest-path "$ROOT/Cargo.toml" -p manifest-server
TARGET_DIR=$(cargo metadata --manifest-path "$ROOT/Cargo.toml" --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN=$TARGET_DIR/debug/manifest-server

# ---------------------------------------------------------------- server
WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/store/cohorts" "$WORK/store/releases" "$WORK/store/artifacts" "$WORK/chrome"
echo "$TOKEN" >"$WORK/tokens"
"$BIN" --store "$WORK/store" --listen 127.0.0.1:0 \
    --reports-db "$WORK/reports.sqlite" --report-token-file "$WORK/tokens" \
    >"$WORK/stdout" 2>"$WORK/stderr" &
SERVER_PID=$!
for _ in $(seq 1 100); do
    grep -q "listening on" "$WORK/stdout" 2>/dev/null && break
    sleep 0.1
done
URL=$(sed -n 's/^listening on //p' "$WORK/stdout")
[ -n "$URL" ] || { cat "$WORK/stderr" >&2; exit 1; }

# ---------------------------------------------------------------- reports
NOW=$(date -u +%s)
# minutes ago -> RFC 3339
at() { date -u -d "@$((NOW - $1 * 60))" +%Y-%m-%dT%H:%M:%SZ; }
# Versions: "null" or a version string.
q() { if [ "$1" = null ]; then printf null; else printf '"%s"' "$1"; fi; }

# send DEVICE COHORT MINUTES_AGO OUTCOME FROM TO RUNNING STAGE REASON
send() {
    local id body code
    id=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    body=$(printf '{"schema":1,"id":"%s","device_id":"%s","product":"neopro","cohort":"%s","at":"%s","outcome":"%s","from_version":%s,"to_version":%s,"running_version":%s,"stage":%s,"reason":"%s","duration_secs":%s,"dropped_reports":0}' \
        "$id" "$1" "$2" "$(at "$3")" "$4" "$(q "$5")" "$(q "$6")" "$(q "$7")" "$(q "$8")" "$9" \
        "$([ "$4" = updated ] || [ "$4" = rolled_back ] && echo $((40 + RANDOM % 80)) || echo null)")
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' --data-binary "$body" "$URL/v1/reports")
    [ "$code" = 201 ] || { echo "POST for $1 answered $code" >&2; exit 1; }
}

echo "posting reports" >&2
# canary: 12 lab screens, target 2.6.0 since yesterday.
for i in $(seq 1 12); do
    d=lab-screen-$(printf %02d "$i")
    case $i in
    4)
        send "$d" canary 1310 rolled_back 2.5.0 2.6.0 2.5.0 health "health check http://127.0.0.1:8080/health answered 503 for 120 s; rolled back to 2.5.0"
        send "$d" canary $((10 + i)) blocked 2.5.0 2.6.0 2.5.0 null "target 2.6.0 failed on this device before and is blocked"
        ;;
    9)
        send "$d" canary 1250 rolled_back 2.5.0 2.6.0 2.5.0 health "video-player.service exited with status 134 (SIGABRT) during the trial"
        send "$d" canary $((10 + i)) blocked 2.5.0 2.6.0 2.5.0 null "target 2.6.0 failed on this device before and is blocked"
        ;;
    12)
        send "$d" canary 4320 up_to_date 2.5.0 2.5.0 2.5.0 null "running 2.5.0, the target of cohort canary"
        ;;
    *)
        send "$d" canary $((1380 - i * 7)) updated 2.5.0 2.6.0 2.6.0 null "installed 2.6.0 in slot b"
        send "$d" canary $((5 + i)) up_to_date 2.6.0 2.6.0 2.6.0 null "running 2.6.0, the target of cohort canary"
        ;;
    esac
done
# stable: 48 hall screens on 2.4.1, 2.5.0 at 25 % since two hours.
for i in $(seq 1 48); do
    d=hall-$(((i - 1) / 8 + 1))-screen-$(((i - 1) % 8 + 1))
    case $i in
    7)
        send "$d" stable 95 rolled_back 2.4.1 2.5.0 2.4.1 health "app.service failed to start: /var/lib/updater/current/app/bin/player: missing libavcodec.so.60"
        ;;
    19)
        send "$d" stable 80 failed 2.4.1 2.5.0 2.4.1 download "artifact 3f9a0c1e…: size exceeds the manifest's 48213504 bytes; download discarded"
        ;;
    30 | 41)
        send "$d" stable 3100 up_to_date 2.4.1 2.4.1 2.4.1 null "running 2.4.1, the target of cohort stable"
        ;;
    2 | 5 | 11 | 14 | 22 | 26 | 33 | 37 | 40 | 44 | 47)
        send "$d" stable $((110 - i)) updated 2.4.1 2.5.0 2.5.0 null "installed 2.5.0 in slot a"
        send "$d" stable $((i % 14 + 1)) up_to_date 2.5.0 2.5.0 2.5.0 null "running 2.5.0, the target of cohort stable"
        ;;
    *)
        send "$d" stable $((i % 14 + 1)) not_in_rollout 2.4.1 2.5.0 2.4.1 null "not selected for 2.5.0 yet"
        ;;
    esac
done

# ---------------------------------------------------------------- screenshot
echo "rendering $URL/ with $CHROMIUM" >&2
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$WORK/chrome" --window-size=1280,900 --hide-scrollbars \
    --screenshot="$OUT" "$URL/?token=$TOKEN" >"$WORK/chromium.log" 2>&1 ||
    { cat "$WORK/chromium.log" >&2; exit 1; }
[ -s "$OUT" ] || { cat "$WORK/chromium.log" >&2; exit 1; }
echo "wrote $OUT ($(stat -c %s "$OUT") bytes)" >&2
