#!/usr/bin/env bash
# Fetch the pinned QEMU base (Debian source package) through apt and verify
# it.  out/downloads/ keeps the three files: a second run downloads nothing.
# (scripts/series.sh extracts them with dpkg-source -x.)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt-private.sh

PKG=qemu
VERSION=1:10.2.2+ds-1
# sha256 of the pinned files
PINS="f1684b3aa5ec500c3389d346c6501dee45041ea91656c6556d4da9023b7987dd  qemu_10.2.2+ds-1.dsc
be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb  qemu_10.2.2+ds.orig.tar.xz
ddf75aceab4f8f77374f3cb34fc97b41514895aeb293ce8b2ddd5e072bb0f5c0  qemu_10.2.2+ds-1.debian.tar.xz"

DL=out/downloads

verified() { (cd "$DL" && sha256sum --quiet --strict -c - <<<"$PINS") >/dev/null 2>&1; }

mkdir -p "$DL"
if ! verified; then
    echo "fetch: downloading $PKG=$VERSION with apt-get source"
    apt_private_setup
    apt_private_update
    tmp=$(mktemp -d "$DL/.partial.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    if ! (cd "$tmp" && apt-get "${APT_OPTS[@]}" -q source --download-only \
            "$PKG=$VERSION") >"$tmp.log" 2>&1; then
        tail -n 5 "$tmp.log" >&2; rm -f "$tmp.log"
        die "apt-get source $PKG=$VERSION failed: mirror unreachable or version gone from sid"
    fi
    rm -f "$tmp.log"
    if ! (cd "$tmp" && sha256sum --strict -c - <<<"$PINS") >"$tmp/check" 2>&1; then
        grep -v ': OK$' "$tmp/check" >&2
        die "checksum mismatch for the downloaded $PKG $VERSION files (kept nothing)"
    fi
    mv "$tmp"/qemu_10.2.2+ds* "$DL/"
    rm -rf "$tmp"; trap - EXIT
fi
echo "fetch: $PKG $VERSION verified (sha256)"

