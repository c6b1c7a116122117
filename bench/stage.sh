#!/usr/bin/env bash
# Staging benchmark (not CI): how the updater compares with the durable
# runbook way of installing a tarball, on loopback, on this machine.
#
# Baseline (named): `curl -s URL | tee >(sha256sum) | tar xz -C DIR && sync -f DIR`
# Ours: a full `updater check` that downloads, hashes, unpacks, syncs and
#       switches a 512 MiB component (half random, half text) served by
#       manifest-server.
# Prints: wall-time ratio ours/baseline (target <= 0.5), the updater's peak
# RSS (target <= 16 MiB) and the wall time of an idle check answered by a
# 304 (target <= 20 ms). Runs each side RUNS times (default 3), alternating,
# and reports medians.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SIZE_MIB=${SIZE_MIB:-512}

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need curl curl
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

echo "building release binaries..."
cargo build --release --quiet --bins
BIN=$PWD/target/release
W=$(mktemp -d /var/tmp/stage-bench.XXXXXX)
SERVER_PID=
trap '[ -n "$SERVER_PID" ] && kill $SERVER_PID 2>/dev/null; rm -rf "$W"' EXIT

echo "generating a ${SIZE_MIB} MiB component (half random, half text) in $W ..."
mkdir -p "$W/component/random" "$W/component/text" "$W/keys" "$W/device-keys"
half=$((SIZE_MIB / 2)) files=8
for i in $(seq $files); do
  head -c $((half / files))M /dev/urandom > "$W/component/random/blob-$i.bin"
done
python3 - "$W/component/text" "$half" "$files" <<'PY'
import random, sys, os
out, half, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
words = ("match score team goal player referee screen video hall kiosk update "
         "frame render audio stream config level time period home away").split()
rng = random.Random(42)
line_pool = [" ".join(rng.choice(words) for _ in range(12)) + f" {i}\n" for i in range(50000)]
for f in range(files):
    target = half * 1024 * 1024 // files
    with open(os.path.join(out, f"log-{f}.txt"), "w") as fh:
        n = 0
        while n < target:
            chunk = "".join(rng.choices(line_pool, k=2000))
            fh.write(chunk[: target - n]); n += len(chunk)
PY
cp keys/dev-only.key keys/dev-only.pub "$W/keys/" && chmod 600 "$W/keys/dev-only.key" && cp keys/dev-only.pub "$W/device-keys/"
"$BIN/manifest-builder" release --store "$W/store" --product bench --version 1.0.0 --compatible bench-hw \
  --component data="$W/component" --key "$W/keys/dev-only.key" >/dev/null
"$BIN/manifest-builder" promote --store "$W/store" --cohort stable --version 1.0.0 --key "$W/keys/dev-only.key" >/dev/null
ART=$(ls "$W/store/artifacts")
echo "artifact: $(du -m "$W/store/artifacts/$ART" | cut -f1) MiB compressed"

"$BIN/manifest-server" --store "$W/store" --listen 127.0.0.1:0 > "$W/server.out" 2> "$W/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q listening "$W/server.out" && break; sleep 0.05; done
URL=$(sed -n 's/^listening on //p' "$W/server.out")

cat > "$W/updater.toml" <<CONF
server = "$URL"
product = "bench"
cohort = "stable"
compatible = "bench-hw"
device_id = "bench-1"
keys_dir = "$W/device-keys"
state_dir = "$W/state"
[health]
grace = "0s"
interval = "10ms"
required_passes = 1
CONF

now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

baseline() {
  rm -rf "$W/base" && mkdir -p "$W/base" && sync
  local t0; t0=$(now_ms)
  curl -s "$URL/artifacts/$ART" | tee >(sha256sum > "$W/base.sha") | tar xz -C "$W/base" && sync -f "$W/base"
  echo $(( $(now_ms) - t0 ))
}
ours() {
  rm -rf "$W/state" && sync
  local t0; t0=$(now_ms)
  /usr/bin/time -v -o "$W/time.txt" "$BIN/updater" --config "$W/updater.toml" check 2> "$W/updater.log" || {
    rc=$?; [ $rc -eq 10 ] || { echo "updater failed ($rc):" >&2; cat "$W/updater.log" >&2; exit 1; }; }
  echo $(( $(now_ms) - t0 ))
  grep 'Maximum resident' "$W/time.txt" | awk '{print $NF}' >> "$W/rss.txt"
}

: > "$W/base.txt"; : > "$W/ours.txt"; : > "$W/rss.txt"
for r in $(seq "$RUNS"); do
  baseline >> "$W/base.txt"
  ours >> "$W/ours.txt"
  echo "run $r: baseline $(tail -1 "$W/base.txt") ms, updater $(tail -1 "$W/ours.txt") ms"
done

# Idle checks: the device is on target, the server answers 304. A run that
# is not "up to date" (exit 0) is not an idle check: the benchmark stops.
: > "$W/idle.txt"
for _ in $(seq 20); do
  t0=$(date +%s%N)
  code=0
  "$BIN/updater" --config "$W/updater.toml" check 2>"$W/idle.err" || code=$?
  echo $(( ($(date +%s%N) - t0) / 1000 )) >> "$W/idle.txt"
  [ "$code" = 0 ] || { cat "$W/idle.err" >&2; echo "idle check exited $code, not 0 (up to date)" >&2; exit 1; }
done

B=$(median < "$W/base.txt"); O=$(median < "$W/ours.txt")
RSS=$(sort -n "$W/rss.txt" | tail -1); IDLE=$(median < "$W/idle.txt")
echo
echo "stage ${SIZE_MIB} MiB (half random, half text), median of $RUNS, $(nproc) cores:"
echo "  baseline (curl | tee >(sha256sum) | tar xz && sync -f): ${B} ms"
echo "  updater check (download+hash+unpack+sync+switch):      ${O} ms"
awk -v o="$O" -v b="$B" 'BEGIN { printf "  ratio updater/baseline: %.2f (target <= 0.5)\n", o / b }'
awk -v r="$RSS" 'BEGIN { printf "  updater peak RSS: %.1f MiB (target <= 16 MiB)\n", r / 1024 }'
awk -v i="$IDLE" 'BEGIN { printf "  idle check (304), median of 20: %.1f ms (target <= 20 ms)\n", i / 1000 }'
