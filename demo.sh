#!/usr/bin/env bash
# The whole story on one machine, in a temp dir, in under a minute after the
# build: publish v1, v2 and a broken v3 of a small app, serve the store,
# and watch a device install v1, upgrade to v2, try v3, fail its health
# check and roll back to v2 by itself.
#
#   ./demo.sh            (KEEP=1 ./demo.sh keeps the temp dir for a look around)
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\n\033[1;34m==> %s\033[0m\n' "$*"; }
note() { printf '    %s\n' "$*"; }

say "Building (cargo build --bins)"
cargo build --quiet --bins
BIN=$PWD/target/debug
BUILDER=$BIN/manifest-builder SERVER=$BIN/manifest-server UPDATER=$BIN/updater APP=$BIN/sample-app

DEMO=$(mktemp -d /tmp/updater-demo.XXXXXX)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  [ -f "$DEMO/app.pid" ] && kill "$(cat "$DEMO/app.pid")" 2>/dev/null || true
  if [ -z "${KEEP:-}" ]; then rm -rf "$DEMO"; else echo "kept $DEMO"; fi
}
trap cleanup EXIT

# Development-only keys (keys/README.md): never use them for a real fleet.
mkdir -p "$DEMO/keys" "$DEMO/device-keys"
cp keys/dev-only.key keys/dev-only.pub "$DEMO/keys/" && chmod 600 "$DEMO/keys/dev-only.key"
cp keys/dev-only.pub "$DEMO/device-keys/"
KEY=$DEMO/keys/dev-only.key

APP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# A release = an `app` component (a start script and a health marker the
# sample app reads) + a `config` component that never changes.
make_release() { # version health
  local v=$1 health=$2 dir=$DEMO/build/$1
  mkdir -p "$dir/app/bin" "$DEMO/build/config"
  cat > "$dir/app/bin/start" <<SCRIPT
#!/bin/sh
exec "$APP" --port "$APP_PORT" --version $v --health-file "\$(dirname "\$0")/../health" --pid-file "$DEMO/app.pid"
SCRIPT
  chmod +x "$dir/app/bin/start"
  echo "$health" > "$dir/app/health"
  echo "screen_brightness=80" > "$DEMO/build/config/screen.conf"
  "$BUILDER" release --store "$DEMO/store" --product neopro --version "$v" \
    --compatible raspberrypi-arm64 --component app="$dir/app" --component config="$DEMO/build/config" --key "$KEY" \
    | sed 's/^/    /'
}

say "Release engineer: publish v1.0.0, v2.0.0 and a broken v3.0.0 into a signed store"
make_release 1.0.0 ok
make_release 2.0.0 ok
make_release 3.0.0 broken
note "the config component is identical in all three: same hash, stored once, never downloaded twice"

say "Serve the store with manifest-server (verifies every manifest before serving it)"
"$SERVER" --store "$DEMO/store" --listen 127.0.0.1:0 --keys "$DEMO/keys/dev-only.pub" > "$DEMO/server.out" 2> "$DEMO/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q 'listening on' "$DEMO/server.out" 2>/dev/null && break; sleep 0.05; done
URL=$(sed -n 's/^listening on //p' "$DEMO/server.out")
note "store at $URL"

# The device: an updater with its own state dir, restarting the app through a
# small script (on a real device: systemctl restart neopro.service).
cat > "$DEMO/restart-app" <<SCRIPT
#!/bin/sh
[ -f "$DEMO/app.pid" ] && kill "\$(cat "$DEMO/app.pid")" 2>/dev/null && sleep 0.2
setsid "$DEMO/state/current/app/bin/start" >> "$DEMO/app.log" 2>&1 < /dev/null &
exit 0
SCRIPT
chmod +x "$DEMO/restart-app"
cat > "$DEMO/updater.toml" <<CONF
server = "$URL"
product = "neopro"
cohort = "stable"
compatible = "raspberrypi-arm64"
device_id = "sports-hall-7-screen-2"
keys_dir = "$DEMO/device-keys"
state_dir = "$DEMO/state"

[restart]
units = ["neopro.service"]
command = ["$DEMO/restart-app"]

[health]
grace = "500ms"
interval = "300ms"
window = "4s"
required_passes = 3
http = [{ url = "http://127.0.0.1:$APP_PORT/health", status = 200 }]
CONF

promote() { # version: sign a new cohort manifest, wait until the server serves it
  "$BUILDER" promote --store "$DEMO/store" --cohort stable --version "$1" --key "$KEY" | sed 's/^/    /'
  # manifest-server picks up changes through inotify within a fraction of a second.
  for _ in $(seq 100); do
    curl -s "$URL/cohorts/stable.json" | cmp -s - "$DEMO/store/cohorts/stable.json" && return 0
    sleep 0.05
  done
  echo "the server did not pick up the new cohort manifest; see $DEMO/server.log" >&2
  exit 1
}

check() { # run one convergence and show what the device did
  set +e
  "$UPDATER" --config "$DEMO/updater.toml" check 2>&1 | sed 's/^/    device: /'
  local rc=${PIPESTATUS[0]}
  set -e
  note "exit code $rc ($1)"
  note "app answers: $(curl -s "http://127.0.0.1:$APP_PORT/version" || echo 'nothing')"
}

say "Ops: promote v1.0.0 to the stable cohort; the device converges"
promote 1.0.0
check "10 = updated"

say "Nothing changed: an idle poll costs one conditional request (304)"
check "0 = up to date"

say "Ops: promote v2.0.0; only the changed app component is downloaded"
promote 2.0.0
check "10 = updated"

say "Ops: promote the broken v3.0.0; its health check fails and the device rolls back by itself"
promote 3.0.0
check "11 = rolled back"

say "Next poll: v3.0.0 is blocked on this device and is not retried"
check "0 = nothing to do"

say "What the device says about itself (updater status, updater history)"
"$UPDATER" --config "$DEMO/updater.toml" status | sed 's/^/    /'
"$UPDATER" --config "$DEMO/updater.toml" history | sed 's/^/    /'
say "Done. Fix the release, publish 3.0.1, promote it, and every device moves on."
