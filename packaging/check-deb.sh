#!/bin/sh
# Install the built packages into a scratch root with dpkg and check that
# files, config and units are where docs/UPDATER.md and docs/DEPLOYMENT.md
# (Packages) say, that the updater postinst succeeded without a running
# systemd, that the binaries run, and that remove + purge clean up.
# Usage: packaging/check-deb.sh [updater_*.deb]   (default: the newest for
# this machine's architecture in ${CARGO_TARGET_DIR:-target}/debian/); the
# manifest-server and manifest-builder packages are the newest ones of the
# same architecture next to it. Host-architecture packages only (the
# binaries are run). Needs dpkg; run as root (as in CI containers) or under
# fakeroot.
set -eu
cd "$(dirname "$0")/.."

arch=$(dpkg --print-architecture)
deb=${1:-$(ls -t "${CARGO_TARGET_DIR:-target}"/debian/updater_*_"$arch".deb 2>/dev/null | head -n 1)}
[ -n "$deb" ] && [ -f "$deb" ] || { echo "check-deb: no updater .deb for $arch (run packaging/build-debs.sh)" >&2; exit 1; }
debdir=$(dirname "$deb")
server_deb=$(ls -t "$debdir"/manifest-server_*_"$arch".deb 2>/dev/null | head -n 1)
builder_deb=$(ls -t "$debdir"/manifest-builder_*_"$arch".deb 2>/dev/null | head -n 1)
[ -n "$server_deb" ] && [ -n "$builder_deb" ] || {
    echo "check-deb: no manifest-server/manifest-builder .deb next to $deb (run packaging/build-debs.sh)" >&2
    exit 1
}

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { # description, command...
    what=$1; shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}

# An empty dpkg database in the scratch root. --force-script-chrootless runs
# the maintainer scripts on the host with DPKG_ROOT set (no chroot, no
# systemd needed); --force-depends because libc6 & co are not in the root.
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
: >"$root/var/lib/dpkg/status"
: >"$root/var/lib/dpkg/available"
DPKG="dpkg --root=$root --log=/dev/null --force-script-chrootless --force-depends"

echo "check-deb: $deb -> $root"
dpkg-deb -c "$deb" | sed 's/^/  /'
if $DPKG -i "$deb"; then ok "dpkg -i (postinst ran without systemd)"; else bad "dpkg -i"; fi

status=$(dpkg --root="$root" -s updater 2>/dev/null | sed -n 's/^Status: //p')
check "package state is 'install ok installed' (was: $status)" test "$status" = "install ok installed"
check "/usr/bin/updater is executable" test -x "$root/usr/bin/updater"
check "/usr/bin/updater runs" "$root/usr/bin/updater" --version
check "updater.service as shipped" cmp "$root/lib/systemd/system/updater.service" systemd/updater.service
check "updater.timer as shipped" cmp "$root/lib/systemd/system/updater.timer" systemd/updater.timer
check "timer enabled (timers.target.wants)" test -L "$root/etc/systemd/system/timers.target.wants/updater.timer"
check "updater-daemon.service as shipped" cmp "$root/lib/systemd/system/updater-daemon.service" systemd/updater-daemon.service
check "updater-daemon.service not enabled (offline sites opt in)" test ! -e "$root/etc/systemd/system/multi-user.target.wants/updater-daemon.service"
check "/etc/updater/updater.toml" test -f "$root/etc/updater/updater.toml"
check "/etc/updater/updater.toml is a conffile" grep -qx '/etc/updater/updater.toml' "$root/var/lib/dpkg/info/updater.conffiles"
check "conffile listed by dpkg -s" sh -c "dpkg --root='$root' -s updater | grep -q '^ /etc/updater/updater.toml '"
check "/etc/updater/keys/ with its README" test -f "$root/etc/updater/keys/README"
check "/var/lib/updater (state_dir)" test -d "$root/var/lib/updater"
check "man page updater.1.gz" sh -c "gzip -dc '$root/usr/share/man/man1/updater.1.gz' | grep -q '^\.TH updater 1'"
check "bash completion" bash -n "$root/usr/share/bash-completion/completions/updater"
check "zsh completion" test -s "$root/usr/share/zsh/vendor-completions/_updater"
check "fish completion" test -s "$root/usr/share/fish/vendor_completions.d/updater.fish"
check "UPDATER.md (unit's Documentation=)" test -f "$root/usr/share/doc/updater/UPDATER.md"

# The template is refused as shipped (no server) and accepted once a server
# and a key are filled in, as its comments say.
cfg="$root/tmp-config"
mkdir -p "$cfg/keys"
cp keys/dev-only.pub "$cfg/keys/"
echo "check-deb-device" >"$cfg/machine-id"
sed -e "s|^keys_dir = .*|keys_dir = \"$cfg/keys\"|" \
    -e "s|^device_id_file = .*|device_id_file = \"$cfg/machine-id\"|" \
    -e "s|^state_dir = .*|state_dir = \"$cfg/state\"|" \
    "$root/etc/updater/updater.toml" >"$cfg/unfilled.toml"
if "$root/usr/bin/updater" --config "$cfg/unfilled.toml" config check >/dev/null 2>&1; then
    bad "template without a server is refused"
else
    ok "template without a server is refused"
fi
sed -e 's|^#server = |server = |' "$cfg/unfilled.toml" >"$cfg/filled.toml"
check "template + server + key passes 'updater config check'" \
    "$root/usr/bin/updater" --config "$cfg/filled.toml" config check
rm -rf "$cfg"

# Remove keeps the conffile; purge removes it, the state and the symlink.
if $DPKG -r updater >/dev/null; then ok "dpkg -r"; else bad "dpkg -r"; fi
check "binary gone after remove" test ! -e "$root/usr/bin/updater"
check "conffile kept after remove" test -f "$root/etc/updater/updater.toml"
if $DPKG -P updater >/dev/null; then ok "dpkg -P"; else bad "dpkg -P"; fi
check "conffile gone after purge" test ! -e "$root/etc/updater/updater.toml"
check "state gone after purge" test ! -e "$root/var/lib/updater"
check "timer symlink gone after purge" test ! -L "$root/etc/systemd/system/timers.target.wants/updater.timer"
check "daemon unit gone after purge" test ! -e "$root/lib/systemd/system/updater-daemon.service"

# manifest-server: binary, unit at the documented place (not enabled: it
# needs a store and a key first), README.Debian, man page, completions.
echo "check-deb: $server_deb -> $root"
if $DPKG -i "$server_deb"; then ok "dpkg -i manifest-server"; else bad "dpkg -i manifest-server"; fi
status=$(dpkg --root="$root" -s manifest-server 2>/dev/null | sed -n 's/^Status: //p')
check "manifest-server state is 'install ok installed' (was: $status)" test "$status" = "install ok installed"
check "/usr/bin/manifest-server runs --help" "$root/usr/bin/manifest-server" --help
check "manifest-server.service as shipped" cmp "$root/lib/systemd/system/manifest-server.service" systemd/manifest-server.service
check "manifest-server.service not enabled" test ! -e "$root/etc/systemd/system/multi-user.target.wants/manifest-server.service"
check "manifest-server README.Debian" test -f "$root/usr/share/doc/manifest-server/README.Debian"
check "man page manifest-server.1.gz" sh -c "gzip -dc '$root/usr/share/man/man1/manifest-server.1.gz' | grep -q '^\.TH manifest-server 1'"
check "manifest-server bash completion" bash -n "$root/usr/share/bash-completion/completions/manifest-server"
if $DPKG -P manifest-server >/dev/null; then ok "dpkg -P manifest-server"; else bad "dpkg -P manifest-server"; fi
check "manifest-server gone after purge" test ! -e "$root/usr/bin/manifest-server"

# manifest-builder: binary, man page, completions.
echo "check-deb: $builder_deb -> $root"
if $DPKG -i "$builder_deb"; then ok "dpkg -i manifest-builder"; else bad "dpkg -i manifest-builder"; fi
status=$(dpkg --root="$root" -s manifest-builder 2>/dev/null | sed -n 's/^Status: //p')
check "manifest-builder state is 'install ok installed' (was: $status)" test "$status" = "install ok installed"
check "/usr/bin/manifest-builder runs --version" "$root/usr/bin/manifest-builder" --version
check "/usr/bin/manifest-builder keygen writes a key pair" sh -c \
    "'$root/usr/bin/manifest-builder' keygen --out '$root/tmp-key' && test -s '$root/tmp-key.pub' && test -s '$root/tmp-key.key'"
rm -f "$root/tmp-key.pub" "$root/tmp-key.key"
check "man page manifest-builder.1.gz" sh -c "gzip -dc '$root/usr/share/man/man1/manifest-builder.1.gz' | grep -q '^\.TH manifest-builder 1'"
check "manifest-builder bash completion" bash -n "$root/usr/share/bash-completion/completions/manifest-builder"
if $DPKG -P manifest-builder >/dev/null; then ok "dpkg -P manifest-builder"; else bad "dpkg -P manifest-builder"; fi
check "manifest-builder gone after purge" test ! -e "$root/usr/bin/manifest-builder"

if [ "$fails" -ne 0 ]; then
    echo "check-deb: $fails check(s) failed"
    exit 1
fi
echo "check-deb: all checks passed"
