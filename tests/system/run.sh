#!/usr/bin/env bash
# Real systemd, end to end (issue 8, docs/SYSTEMD-E2E.md): the updater and
# its units on a Debian bookworm userspace booted with systemd-nspawn,
# driven only by its own timer, against a manifest-server on host loopback.
#
#   sudo tests/system/run.sh        (KEEP=1 keeps the work dir for a look around)
#
# Needs root, systemd-nspawn (apt-get install systemd-container) and, the first
# time, debootstrap and a Debian mirror (the root is cached under
# target/system-root; UPDATER_SYSTEM_ROOT overrides the location,
# DEBIAN_MIRROR the mirror).
set -euo pipefail
cd "$(dirname "$0")/../.."
WS=$PWD
HERE=$WS/tests/system

T0=$(date +%s.%N)
STEP_T=$T0
STEP_NAME=
FAILED=0
step() { # name: close the previous step (print its duration), open a new one
  local now; now=$(date +%s.%N)
  [ -n "$STEP_NAME" ] && printf '    \033[2m(%s: %.1fs)\033[0m\n' "$STEP_NAME" "$(echo "$now - $STEP_T" | bc)"
  STEP_NAME=$1 STEP_T=$now
  [ -n "$1" ] && printf '\n\033[1;34m==> [%6.1fs] %s\033[0m\n' "$(echo "$now - $T0" | bc)" "$1"
  return 0
}
note() { printf '    %s\n' "$*"; }
ok() { printf '    \033[32mok\033[0m %s\n' "$*"; }
die() {
  printf '\n\033[1;31mFAIL: %s\033[0m\n' "$*" >&2
  FAILED=1
  diagnostics >&2 || true
  exit 1
}

[ "$(id -u)" = 0 ] || { echo "run as root (systemd-nspawn and debootstrap need it)" >&2; exit 2; }
command -v systemd-nspawn >/dev/null || { echo "systemd-nspawn missing: apt-get install -y systemd-container" >&2; exit 2; }
command -v journalctl >/dev/null || { echo "journalctl missing: apt-get install -y systemd" >&2; exit 2; }
for tool in curl python3 bc; do command -v $tool >/dev/null || { echo "$tool missing" >&2; exit 2; }; done

ROOT=${UPDATER_SYSTEM_ROOT:-$WS/target/system-root}
WORK=$(mktemp -d /tmp/updater-system.XXXXXX)
SERVER_PID= NSPAWN_PID=

stop_container() { # SIGTERM = orderly poweroff of the container; SIGKILL if it hangs
  [ -n "$NSPAWN_PID" ] || return 0
  kill -TERM "$NSPAWN_PID" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$NSPAWN_PID" 2>/dev/null; then
    note "the container did not power off within 30 s: SIGKILL"
    kill -KILL "$NSPAWN_PID" 2>/dev/null || true
  fi
  wait "$NSPAWN_PID" 2>/dev/null || true
  NSPAWN_PID=
}
cleanup() {
  stop_container
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  if [ -n "${KEEP:-}" ] || [ "$FAILED" = 1 ]; then echo "kept $WORK (container log, server log, store)"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
journal() { journalctl -q -D "$ROOT/var/log/journal" --no-pager "$@" 2>/dev/null || true; }
updater_journal_json() { journal -o json SYSLOG_IDENTIFIER=updater; }
status_json() { "$BIN/updater" --config "$WORK/host-view.toml" status --json 2>/dev/null; }
status_field() { # python expression on `s` (the status JSON)
  status_json | python3 -c "import json,sys; s=json.load(sys.stdin); v=$1; print('' if v is None else v)" 2>/dev/null || true
}
app_version() { curl -s -m 2 "http://127.0.0.1:$APP_PORT/version" || true; }
app_answers() { [ -n "$(app_version)" ]; }
app_healthy() { [ "$(app_health)" = 200 ]; }
app_health() { curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$APP_PORT/health" || true; }
# Units in the container, through its namespaces (no machinectl: --register=no).
leader() { cat "/proc/$NSPAWN_PID/task/$NSPAWN_PID/children" 2>/dev/null | awk '{print $1}'; }
in_container() { nsenter -t "$(leader)" -m -u -i -p -- "$@"; }
unit_active() { in_container systemctl is-active "$1" 2>/dev/null || true; }
unit_is() { [ "$(unit_active "$1")" = "$2" ]; }
# How often systemd started demo-app.service / began a run of updater.service
# (the job-done message id also covers "skipped because of an unmet condition").
app_starts() { journal -o cat UNIT=demo-app.service MESSAGE_ID=39f53479d3a045ac8e11786248231fbf | grep -c '^Started' || true; }
updater_runs() { journal -o cat UNIT=updater.service | grep -c '^Starting updater.service' || true; }
status_is() { [ "$(status_field "$1")" = "$2" ]; }
status_set() { [ -n "$(status_field "$1")" ]; }
wait_for() { # timeout-seconds description command...
  local t=$1 what=$2; shift 2
  local end=$(( $(date +%s) + t ))
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || die "timed out after ${t}s waiting for: $what"
    sleep 0.3
  done
}
diagnostics() {
  echo "---- status (host view)"; status_json || true
  echo "---- updater journal"; journal -o short-precise SYSLOG_IDENTIFIER=updater | tail -40
  echo "---- updater.service / demo-app.service (systemd)"; journal -o short-precise UNIT=updater.service + UNIT=demo-app.service | tail -40
  echo "---- container console (tail)"; tail -20 "$WORK/container.log" 2>/dev/null
}

# ---------------------------------------------------------------- build
step "Build the workspace binaries (cargo build --bins, debug)"
cargo build --quiet --bins
BIN=$WS/target/debug
for b in updater manifest-builder manifest-server sample-app; do [ -x "$BIN/$b" ] || die "missing $BIN/$b"; done
ok "updater, manifest-builder, manifest-server, sample-app"

# ---------------------------------------------------------------- root
step "Debian bookworm root under $ROOT"
if [ -x "$ROOT/lib/systemd/systemd" ] && [ -x "$ROOT/usr/bin/curl" ]; then
  note "reusing the cached root ($(du -sh "$ROOT" 2>/dev/null | cut -f1))"
else
  command -v debootstrap >/dev/null || { echo "debootstrap missing: apt-get install -y debootstrap" >&2; exit 2; }
  MIRROR=${DEBIAN_MIRROR:-}
  if [ -z "$MIRROR" ]; then
    MIRROR=$( { sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null
                awk '$1=="deb"{print $2}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } \
              | tr ' ' '\n' | grep -E '/debian/?$' | grep -v security | head -1 || true)
  fi
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
  note "debootstrap --variant=minbase bookworm from $MIRROR"
  rm -rf "$ROOT.tmp"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl,ca-certificates \
    bookworm "$ROOT.tmp" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
  mv "$ROOT.tmp" "$ROOT"
  note "built ($(du -sh "$ROOT" | cut -f1))"
fi

# Can this machine start a container at all? (A CI runner inside an
# unprivileged container cannot.) With SYSTEM_TEST_MODE=auto that is a skip
# (exit 77), said loudly; otherwise a failure like any other.
if ! probe=$(systemd-nspawn -q --register=no --keep-unit -D "$ROOT" /bin/true 2>&1); then
  if [ "${SYSTEM_TEST_MODE:-}" = auto ]; then
    printf '\n!!!!!!!! SKIPPED: systemd-nspawn cannot start a container on this machine: %s\n' "$probe" >&2
    exit 77
  fi
  die "systemd-nspawn cannot start a container here: $probe"
fi
ok "systemd-nspawn starts a container here"

# ---------------------------------------------------------------- store + server
step "Host: sign a store with v1.0.0, v2.0.0, broken v3.0.0, slow-to-heal v4.0.0; serve it"
mkdir -p "$WORK/keys"
cp keys/dev-only.key keys/dev-only.pub "$WORK/keys/" && chmod 600 "$WORK/keys/dev-only.key"
KEY=$WORK/keys/dev-only.key
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
APP_PORT=$(free_port)
HEAL_DELAY=8 # seconds before v4 reports healthy: long enough to stop the container mid-trial
make_release() { # version health(ok|broken|slow)
  local v=$1 health=$2 dir=$WORK/build/$1
  mkdir -p "$dir/app/bin" "$WORK/build/config"
  if [ "$health" = slow ]; then
    # Healthy only HEAL_DELAY s after each start (a slow warm-up), so every
    # trial of it spends a while failing its checks first.
    cat > "$dir/app/bin/start" <<SCRIPT
#!/bin/sh
mkdir -p /run/demo-app
echo warming-up > /run/demo-app/health
( sleep $HEAL_DELAY; echo ok > /run/demo-app/health ) &
exec /usr/local/bin/sample-app --port $APP_PORT --version $v --health-file /run/demo-app/health
SCRIPT
  else
    echo "$health" > "$dir/app/health"
    cat > "$dir/app/bin/start" <<SCRIPT
#!/bin/sh
exec /usr/local/bin/sample-app --port $APP_PORT --version $v --health-file "\$(dirname "\$0")/../health"
SCRIPT
  fi
  chmod +x "$dir/app/bin/start"
  echo "screen_brightness=80" > "$WORK/build/config/screen.conf"
  "$BIN/manifest-builder" release --store "$WORK/store" --product neopro --version "$v" \
    --compatible raspberrypi-arm64 --component app="$dir/app" --component config="$WORK/build/config" \
    --key "$KEY" > "$WORK/builder.log" 2>&1 || { cat "$WORK/builder.log"; die "manifest-builder release $v"; }
}
make_release 1.0.0 ok
make_release 2.0.0 ok
make_release 3.0.0 broken
make_release 4.0.0 slow
"$BIN/manifest-builder" promote --store "$WORK/store" --cohort stable --version 1.0.0 --key "$KEY" > /dev/null
"$BIN/manifest-server" --store "$WORK/store" --listen 127.0.0.1:0 --keys "$WORK/keys/dev-only.pub" \
  > "$WORK/server.out" 2> "$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q 'listening on' "$WORK/server.out" 2>/dev/null && break; sleep 0.05; done
URL=$(sed -n 's/^listening on //p' "$WORK/server.out")
[ -n "$URL" ] || die "manifest-server did not start: $(cat "$WORK/server.log")"
ok "store served at $URL (stable -> 1.0.0); the app will listen on 127.0.0.1:$APP_PORT"

promote() { # version
  "$BIN/manifest-builder" promote --store "$WORK/store" --cohort stable --version "$1" --key "$KEY" > /dev/null
  for _ in $(seq 100); do
    curl -s "$URL/cohorts/stable.json" | cmp -s - "$WORK/store/cohorts/stable.json" && return 0
    sleep 0.05
  done
  die "the server did not pick up the new cohort manifest"
}

# ---------------------------------------------------------------- install
step "Install the updater, its units, config, keys and demo-app.service into the root"
# Fresh device state on every run; the cached root itself is left as debootstrap made it.
rm -rf "$ROOT/var/lib/updater" "$ROOT/etc/updater" "$ROOT/var/log/journal" \
       "$ROOT/var/lib/systemd/timers/stamp-updater.timer" "$ROOT/etc/systemd/system/updater.timer.d"
mkdir -p "$ROOT/var/log/journal" "$ROOT/etc/updater/keys" "$ROOT/etc/systemd/system/updater.timer.d" \
         "$ROOT/etc/systemd/system/timers.target.wants" "$ROOT/etc/systemd/system/multi-user.target.wants"
# A fixed machine id: one journal directory across the reboots of this test.
echo 6e7f1b0c5d2a4b8e9f00112233445566 > "$ROOT/etc/machine-id"
install -m 0755 "$BIN/updater" "$ROOT/usr/bin/updater"
install -m 0755 "$BIN/sample-app" "$ROOT/usr/local/bin/sample-app"
install -m 0644 systemd/updater.service systemd/updater.timer "$ROOT/etc/systemd/system/"
install -m 0644 "$HERE/updater.timer.d/10-system-test.conf" "$ROOT/etc/systemd/system/updater.timer.d/"
install -m 0644 "$HERE/demo-app.service" "$ROOT/etc/systemd/system/demo-app.service"
install -m 0644 keys/dev-only.pub "$ROOT/etc/updater/keys/dev-only.pub"
sed -e "s|@SERVER@|$URL|" -e "s|@APP_PORT@|$APP_PORT|" "$HERE/updater.toml.in" > "$ROOT/etc/updater/updater.toml"
ln -sf ../updater.timer "$ROOT/etc/systemd/system/timers.target.wants/updater.timer"
ln -sf ../demo-app.service "$ROOT/etc/systemd/system/multi-user.target.wants/demo-app.service"
# No login prompt on the console of a headless test container.
ln -sf /dev/null "$ROOT/etc/systemd/system/console-getty.service"
# The host reads the device's state with the same binary (status does not take the lock).
sed -e "s|^keys_dir = .*|keys_dir = \"$ROOT/etc/updater/keys\"|" \
    -e "s|^state_dir = .*|state_dir = \"$ROOT/var/lib/updater\"|" \
    "$ROOT/etc/updater/updater.toml" > "$WORK/host-view.toml"
chroot "$ROOT" /usr/bin/updater config check > "$WORK/config-check.txt" 2>&1 \
  || { cat "$WORK/config-check.txt"; die "updater config check refused the device config"; }
ok "updater.service, updater.timer (+ drop-in $(grep -E '^On(Boot|UnitActive)Sec=.' "$HERE/updater.timer.d/10-system-test.conf" | tr '\n' ' ')), demo-app.service enabled"

container_up() { [ -n "$(leader)" ]; }
boot() {
  systemd-nspawn -q --register=no --keep-unit --link-journal=no -D "$ROOT" --boot \
    < /dev/null >> "$WORK/container.log" 2>&1 &
  NSPAWN_PID=$!
  wait_for 30 "the container's systemd to start" container_up
}

# ---------------------------------------------------------------- 1: first boot, v1
step "Boot the container; its timer alone installs v1.0.0"
BOOT1=$(date +%s)
boot
note "systemd-nspawn pid $NSPAWN_PID, container init pid $(leader)"
wait_for 30 "updater.timer to be active" unit_is updater.timer active
ok "updater.timer active"
wait_for 120 "v1.0.0 to be committed by a timer run" status_is 's["active_version"]' 1.0.0
note "v1.0.0 committed $(( $(date +%s) - BOOT1 ))s after boot, by run #$(updater_runs) of updater.service"
[ "$(app_version)" = 1.0.0 ] || die "the app does not answer 1.0.0 (got '$(app_version)')"
[ "$(unit_active demo-app.service)" = active ] || die "demo-app.service is not active"
ok "demo-app.service active, app answers $(app_version) on :$APP_PORT"
[ "$(status_field 's["phase"]')" = idle ] || die "phase is not idle after the first install"
journal -o cat SYSLOG_IDENTIFIER=updater OUTCOME=updated VERSION=1.0.0 | grep -q . || die "no OUTCOME=updated VERSION=1.0.0 in the journal"
[ -f "$ROOT/var/lib/updater/state.json" ] && [ -L "$ROOT/var/lib/updater/current" ] || die "no state.json / current under /var/lib/updater"
ok "state.json and current -> $(readlink "$ROOT/var/lib/updater/current") written under ProtectSystem=strict"

# ---------------------------------------------------------------- 2: v2
step "Promote v2.0.0: the next timer run upgrades and systemd restarts the app"
STARTS=$(app_starts)
promote 2.0.0
wait_for 60 "v2.0.0 to be committed" status_is 's["active_version"]' 2.0.0
[ "$(app_version)" = 2.0.0 ] || die "the app does not answer 2.0.0"
[ "$(app_starts)" -gt "$STARTS" ] || die "systemd did not restart demo-app.service"
[ "$(unit_active demo-app.service)" = active ] || die "demo-app.service is not active"
ok "updated; demo-app.service restarted by systemd ($STARTS -> $(app_starts) starts), app answers $(app_version)"

# ---------------------------------------------------------------- 3: v3 broken
step "Promote the broken v3.0.0: the updater rolls back, the app runs v2.0.0"
STARTS=$(app_starts)
promote 3.0.0
wait_for 90 "v3.0.0 to be blocked (rolled back)" status_set 's["blocked"].get("3.0.0")'
wait_for 10 "phase idle after the rollback" status_is 's["phase"]' idle
[ "$(status_field 's["active_version"]')" = 2.0.0 ] || die "not back on 2.0.0"
journal -o cat SYSLOG_IDENTIFIER=updater OUTCOME=rolled_back VERSION=3.0.0 | grep -q . || die "no OUTCOME=rolled_back VERSION=3.0.0 in the journal"
[ "$(app_version)" = 2.0.0 ] || die "the app does not answer 2.0.0 after the rollback"
[ "$(app_health)" = 200 ] || die "the app is not healthy after the rollback"
[ "$(unit_active demo-app.service)" = active ] || die "demo-app.service is not active"
[ "$(app_starts)" -ge $((STARTS + 2)) ] || die "expected two restarts (switch, rollback), saw $((  $(app_starts) - STARTS ))"
ok "rolled back: $(status_field 's["blocked"]["3.0.0"]')"
ok "demo-app.service restarted twice (to v3, back to v2), active, answers $(app_version)"
# The rollback run exits 11, a SuccessExitStatus: the unit must not be failed.
if journal -o cat UNIT=updater.service | grep -q 'Failed with result'; then die "updater.service failed on a normal outcome"; fi
ok "no updater.service run failed (11 is in SuccessExitStatus)"

# ---------------------------------------------------------------- 4: journal fields
step "The updater's journal entries carry OUTCOME, VERSION, COHORT"
updater_journal_json > "$WORK/updater-journal.json"
python3 - "$WORK/updater-journal.json" <<'PY' || die "structured journal fields missing"
import json, sys
entries = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = [e for e in entries if "OUTCOME" in e]
assert runs, "no entry with OUTCOME"
seen = {(e["OUTCOME"], e.get("VERSION", "")) for e in runs}
for e in runs:
    for k in ("OUTCOME", "VERSION", "COHORT", "PRIORITY", "MESSAGE", "_SYSTEMD_UNIT", "SYSLOG_IDENTIFIER"):
        assert k in e, f"{k} missing in {e}"
    assert e["COHORT"] == "stable", e
    assert e["_SYSTEMD_UNIT"] == "updater.service", e
for want in [("updated", "1.0.0"), ("updated", "2.0.0"), ("rolled_back", "3.0.0")]:
    assert want in seen, f"no OUTCOME={want[0]} VERSION={want[1]} entry; saw {sorted(seen)}"
rb = next(e for e in runs if e["OUTCOME"] == "rolled_back")
assert rb["PRIORITY"] == "4", f"rolled_back should be a warning, PRIORITY={rb['PRIORITY']}"
print(f"    {len(entries)} updater entries, {len(runs)} outcome lines: " + ", ".join(f"{o}/{v or '-'}" for o, v in sorted(seen)))
e = rb
print("    e.g. " + " ".join(f"{k}={e[k]}" for k in ("OUTCOME", "VERSION", "COHORT", "PRIORITY", "_SYSTEMD_UNIT")) + f" MESSAGE={e['MESSAGE'][:70]!r}")
PY
ok "structured fields present"

# ---------------------------------------------------------------- 5: reboot mid-trial
step "Promote v4.0.0 (healthy ${HEAL_DELAY}s after start) and stop the container in the middle of its trial"
promote 4.0.0
wait_for 60 "v4.0.0's trial" status_is 's["phase"]' trial
note "phase trial (slot $(readlink "$ROOT/var/lib/updater/current")); app answers '$(app_version)', health $(app_health): powering off"
# The sandbox as the kernel applies it to the running updater (its trial is in progress).
MAINPID=$(in_container systemctl show -p MainPID --value updater.service 2>/dev/null || true)
if [ -n "$MAINPID" ] && [ "$MAINPID" != 0 ]; then
  in_container cat "/proc/$MAINPID/mountinfo" > "$WORK/updater-mountinfo.txt" 2>/dev/null || true
  in_container cat "/proc/$MAINPID/status" > "$WORK/updater-proc-status.txt" 2>/dev/null || true
  python3 - "$WORK/updater-mountinfo.txt" "$WORK/updater-proc-status.txt" <<'PY' || die "the running updater is not sandboxed as updater.service says"
import sys
mounts = {}
for line in open(sys.argv[1]):
    f = line.split()
    mounts[f[4]] = f[5].split(",")  # mount point -> per-mount options
status = dict(l.split(":", 1) for l in open(sys.argv[2]) if ":" in l)
assert "ro" in mounts.get("/", []), f"/ is not read-only for the updater: {mounts.get('/')}"
assert "ro" in mounts.get("/usr", mounts["/"]), "/usr is writable"
assert "rw" in mounts.get("/var/lib/updater", []), f"/var/lib/updater is not a rw mount: {mounts.get('/var/lib/updater')}"
assert status["NoNewPrivs"].strip() == "1", status["NoNewPrivs"]
assert status["Seccomp"].strip() == "2", status["Seccomp"]
print(f"    the running updater: / ro, /var/lib/updater rw, NoNewPrivs 1, seccomp filter on, CapBnd {status['CapBnd'].strip()}")
PY
else
  note "(the run ended before its sandbox could be inspected)"
fi
T_STOP=$(date +%s.%N)
stop_container
note "container stopped in $(printf %.1f "$(echo "$(date +%s.%N) - $T_STOP" | bc)")s (SIGTERM to systemd-nspawn = orderly poweroff)"
PHASE=$(status_field 's["phase"]')
[ "$PHASE" = trial ] || die "after the stop the state should still be mid-trial, it is '$PHASE'"
python3 -c "import json; s=json.load(open('$ROOT/var/lib/updater/state.json')); print('    state.json on disk: phase', s.get('phase'), 'trial_attempts', s.get('trial_attempts'), 'trial_shutdowns', s.get('trial_shutdowns'))" || true
ok "the device is down in phase trial with current -> $(readlink "$ROOT/var/lib/updater/current") (v4.0.0)"

step "Boot again: the boot-time timer run finishes the trial, the app stays up"
BOOT2=$(date +%s)
RUNS_BEFORE=$(updater_runs)
boot
# The app unit starts at boot from `current` (v4, on trial): the app is up before the updater decides.
wait_for 30 "the app to answer after the reboot" app_answers
note "app answers '$(app_version)' $(( $(date +%s) - BOOT2 ))s after boot (from the slot on trial)"
wait_for 90 "the interrupted trial to finish" status_is 's["phase"]' idle
# The outcome of the run that ended v4's trial (later runs say up_to_date or blocked).
OUTCOME=$(journal -o json SYSLOG_IDENTIFIER=updater VERSION=4.0.0 | python3 -c "import json,sys; o=[e['OUTCOME'] for e in map(json.loads, sys.stdin) if e.get('OUTCOME') in ('updated', 'rolled_back')]; print(o[-1] if o else '')")
ACTIVE=$(status_field 's["active_version"]')
note "trial finished $(( $(date +%s) - BOOT2 ))s after boot: outcome $OUTCOME, active $ACTIVE"
[ "$(updater_runs)" -gt "$RUNS_BEFORE" ] || die "no updater.service run after the reboot"
journal -o cat SYSLOG_IDENTIFIER=updater | grep -q 'resum\|interrupted' || die "the boot-time run did not report resuming the interrupted trial"
ok "$(journal -o cat SYSLOG_IDENTIFIER=updater | grep -m1 'resum\|interrupted')"
case "$OUTCOME/$ACTIVE" in
  updated/4.0.0) ok "committed v4.0.0 after the shutdown" ;;
  rolled_back/2.0.0) ok "rolled back to v2.0.0" ;;
  *) die "unexpected end of the trial: $OUTCOME/$ACTIVE" ;;
esac
wait_for 20 "the app to be healthy" app_healthy
[ "$(app_version)" = "$ACTIVE" ] || die "the app answers '$(app_version)', not $ACTIVE"
[ "$(unit_active demo-app.service)" = active ] || die "demo-app.service is not active"
ok "demo-app.service active, healthy, answers $(app_version)"

# ---------------------------------------------------------------- 6: hardening
step "Hardening: the sandboxed runs wrote their state and restarted units; nothing was denied"
journal -o cat SYSLOG_IDENTIFIER=updater > "$WORK/updater-journal.txt"
if grep -Ei 'read-only file system|permission denied|operation not permitted|access denied|bad system call' "$WORK/updater-journal.txt"; then
  die "the updater hit a sandbox denial (above)"
fi
# The run the poweroff stopped mid-trial exits 16 ("interrupted", a
# SuccessExitStatus); an older updater died by the signal: allow at most one.
journal -o cat UNIT=updater.service | grep -E 'Failed with result|code=(exited|killed)' > "$WORK/updater-failures.txt" || true
if grep -v -E "Failed with result 'signal'|code=killed, status=15/TERM" "$WORK/updater-failures.txt"; then
  die "an updater.service run failed (above)"
fi
[ "$(grep -c "Failed with result 'signal'" "$WORK/updater-failures.txt")" -le 1 ] || die "more than one updater run was killed"
note "updater.service failures: $(grep -c . "$WORK/updater-failures.txt") (a run stopped by the poweroff exits 16, not a failure)"
in_container systemctl show -p ProtectSystem -p ReadWritePaths -p NoNewPrivileges -p CapabilityBoundingSet -p SystemCallFilter updater.service \
  | sed -e 's/^\(SystemCallFilter=.\{40\}\).*/\1…/' -e 's/^/    effective: /'
note "updater.service runs: $(updater_runs), demo-app.service starts: $(app_starts), history lines: $(wc -l < "$ROOT/var/lib/updater/history.jsonl")"
ok "state written under /var/lib/updater and demo-app.service restarted from inside the sandbox"

step ""
printf '\n\033[1;32mPASS\033[0m: real systemd end to end in %.0fs\n' "$(echo "$(date +%s.%N) - $T0" | bc)"
