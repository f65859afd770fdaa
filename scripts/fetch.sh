#!/usr/bin/env bash
# Fetch a pinned source through apt and verify it by sha256.
#   scripts/fetch.sh [qemu]   Debian source package qemu 1:10.2.2+ds-1 (three files;
#                             scripts/series.sh extracts them with dpkg-source -x)
#   scripts/fetch.sh libvirt  upstream tarball libvirt_11.3.0.orig.tar.xz, as the
#                             trixie source package libvirt 11.3.0-3+deb13u3 ships it
# out/downloads/ keeps the files: a second run downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt-private.sh

case "${1:-qemu}" in
qemu)
    PKG=qemu VERSION=1:10.2.2+ds-1
    PINS="f1684b3aa5ec500c3389d346c6501dee45041ea91656c6556d4da9023b7987dd  qemu_10.2.2+ds-1.dsc
be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb  qemu_10.2.2+ds.orig.tar.xz
ddf75aceab4f8f77374f3cb34fc97b41514895aeb293ce8b2ddd5e072bb0f5c0  qemu_10.2.2+ds-1.debian.tar.xz"
    # every file of the source package must arrive
    PARTIAL_OK=0 ;;
libvirt)
    # Only the upstream tarball is used.  The mirror serves it and the Debian
    # tarball but answers 404 for the .dsc and its .asc, so apt-get reports a
    # failure; the sha256 of the orig is what counts.
    PKG=libvirt VERSION=11.3.0-3+deb13u3
    PINS="6bcb0c42c4580436fea262ced56f68a6afe20f7390b1bea2116718cc034a0283  libvirt_11.3.0.orig.tar.xz"
    PARTIAL_OK=1 ;;
*) die "usage: $0 [qemu|libvirt]" ;;
esac

DL=out/downloads
files=$(awk '{ print $2 }' <<<"$PINS")

verified() { (cd "$DL" && sha256sum --quiet --strict -c - <<<"$PINS") >/dev/null 2>&1; }

mkdir -p "$DL"
if ! verified; then
    echo "fetch: downloading $PKG=$VERSION with apt-get source"
    apt_private_setup
    apt_private_update
    tmp=$(mktemp -d "$DL/.partial.XXXXXX")
    trap 'rm -rf "$tmp" "$tmp.log"' EXIT
    if ! (cd "$tmp" && apt-get "${APT_OPTS[@]}" -q source --download-only \
            "$PKG=$VERSION") >"$tmp.log" 2>&1 && [ "$PARTIAL_OK" = 0 ]; then
        tail -n 5 "$tmp.log" >&2
        die "apt-get source $PKG=$VERSION failed: mirror unreachable or version gone"
    fi
    for f in $files; do
        [ -f "$tmp/$f" ] && continue
        tail -n 5 "$tmp.log" >&2
        die "apt-get source $PKG=$VERSION did not bring $f: mirror unreachable or version gone"
    done
    if ! (cd "$tmp" && sha256sum --strict -c - <<<"$PINS") >"$tmp/check" 2>&1; then
        grep -v ': OK$' "$tmp/check" >&2
        die "checksum mismatch for the downloaded $PKG $VERSION files (kept nothing)"
    fi
    for f in $files; do mv "$tmp/$f" "$DL/"; done
    rm -rf "$tmp" "$tmp.log"; trap - EXIT
fi
echo "fetch: $PKG $VERSION verified (sha256)"
