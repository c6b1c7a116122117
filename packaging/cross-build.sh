#!/usr/bin/env bash
# Cross-build the device binary (and manifest-server) for Raspberry Pi:
#   aarch64-unknown-linux-gnu      (Pi 3/4/5 and Zero 2 W, 64-bit OS)
#   armv7-unknown-linux-gnueabihf  (Pi 2/3/4, 32-bit Raspberry Pi OS)
# with Debian's cross gcc as linker (and as CC for C code: rusqlite's bundled
# SQLite, ring's assembly). Linkers are set through the environment here, not
# in a committed .cargo/config.toml, so native builds stay untouched.
#
# Usage: packaging/cross-build.sh [--install] [TARGET...]
#   --install  rustup target add + apt-get install the cross toolchains
#   PROFILE=dist|release (default: dist if Cargo.toml defines it, else release)
#   PACKAGES="updater manifest-server" (default)
# Prints, per target: stripped updater size, `file` output, build time.
# Fails when the stripped aarch64 updater is over 4 MiB (issue 7's budget for
# the device binary). Binaries land in ${CARGO_TARGET_DIR:-target}/<T>/<profile>/.
set -euo pipefail
cd "$(dirname "$0")/.."

install=0
targets=()
for a in "$@"; do
  case "$a" in
    --install) install=1 ;;
    *) targets+=("$a") ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
packages=${PACKAGES:-"updater manifest-server"}
target_dir=${CARGO_TARGET_DIR:-target}
# The stripped arm64 updater must fit in this (4 MiB).
MAX_ARM64_UPDATER=4194304
over=()

if [ -z "${PROFILE:-}" ]; then
  if grep -q '^\[profile\.dist\]' Cargo.toml; then PROFILE=dist; else PROFILE=release; fi
fi

gnu_prefix() {
  case "$1" in
    aarch64-unknown-linux-gnu) echo aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf ;;
    *) echo "unsupported target $1" >&2; exit 2 ;;
  esac
}

if [ "$install" = 1 ]; then
  rustup target add "${targets[@]}"
  debs=()
  for t in "${targets[@]}"; do
    case "$t" in
      aarch64-*) debs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
      armv7-*) debs+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
    esac
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debs[@]}" file
fi

pkg_args=()
for p in $packages; do pkg_args+=(-p "$p"); done

for t in "${targets[@]}"; do
  prefix=$(gnu_prefix "$t")
  command -v "$prefix-gcc" >/dev/null || { echo "$prefix-gcc missing (run with --install)" >&2; exit 1; }
  var=$(echo "$t" | tr 'a-z-' 'A-Z_')
  low=$(echo "$t" | tr '-' '_')
  export "CARGO_TARGET_${var}_LINKER=$prefix-gcc"
  export "CC_${low}=$prefix-gcc"
  export "AR_${low}=$prefix-ar"

  echo "== $t ($PROFILE): ${packages}"
  start=$(date +%s)
  cargo build --locked --profile "$PROFILE" --target "$t" "${pkg_args[@]}"
  secs=$(( $(date +%s) - start ))

  case "$PROFILE" in dev) out="$target_dir/$t/debug" ;; *) out="$target_dir/$t/$PROFILE" ;; esac
  for p in $packages; do
    stripped="$out/$p.stripped"
    cp "$out/$p" "$stripped"
    "$prefix-strip" "$stripped"
    size=$(stat -c %s "$stripped")
    printf '%s %s: %d bytes stripped (%.2f MiB), unstripped %d\n' \
      "$t" "$p" "$size" "$(awk -v s="$size" 'BEGIN{print s/1048576}')" "$(stat -c %s "$out/$p")"
    file "$stripped"
    if [ "$t" = aarch64-unknown-linux-gnu ] && [ "$p" = updater ] && [ "$size" -gt "$MAX_ARM64_UPDATER" ]; then
      echo "FAIL: $t updater is $size bytes stripped, over the $MAX_ARM64_UPDATER-byte (4 MiB) budget" >&2
      over+=("$t $p $size")
    fi
  done
  echo "$t: build time ${secs}s"
done

if [ ${#over[@]} -gt 0 ]; then
  echo "cross-build: over the size budget: ${over[*]}" >&2
  exit 1
fi
