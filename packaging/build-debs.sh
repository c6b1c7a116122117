#!/bin/sh
# Build the Debian packages of updater, manifest-builder and manifest-server
# (docs/DEPLOYMENT.md, Packages): a size-tuned `dist` build, completions and
# man pages generated from the clap definitions, then cargo-deb.
# Needs: cargo-deb (`cargo install cargo-deb`), gzip.
# Output: target/debian/*.deb; prints their paths and sizes.
set -eu
cd "$(dirname "$0")/.."

BINS="updater manifest-builder manifest-server"
PROFILE=dist
OUT=${CARGO_TARGET_DIR:-target}/$PROFILE

cargo build --locked --profile "$PROFILE" -p updater -p manifest-builder -p manifest-server

# Completions and man pages, from the binaries just built.
for bin in $BINS; do
    dir=target/packaging/$bin
    rm -rf "$dir"
    mkdir -p "$dir"
    "$OUT/$bin" generate completions bash >"$dir/$bin.bash"
    "$OUT/$bin" generate completions zsh >"$dir/_$bin"
    "$OUT/$bin" generate completions fish >"$dir/$bin.fish"
    "$OUT/$bin" generate man | gzip -9n >"$dir/$bin.1.gz"
done

debs=""
for bin in $BINS; do
    deb=$(cargo deb --no-build --locked --profile "$PROFILE" -p "$bin" | tail -n 1)
    debs="$debs $deb"
done

echo "packages:"
for deb in $debs; do
    printf '  %-60s %8d bytes\n' "$deb" "$(stat -c %s "$deb")"
done
echo "binaries ($PROFILE profile, stripped):"
for bin in $BINS; do
    printf '  %-60s %8d bytes\n' "$OUT/$bin" "$(stat -c %s "$OUT/$bin")"
done
