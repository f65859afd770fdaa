#!/usr/bin/env bash
# Build libvfio-user's sample server gpio-pci-idio-16 from the QEMU base's
# own subprojects/libvfio-user (a real vfio-user peer for the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=out/qemu-src/subprojects/libvfio-user
B=out/libvfio-user-build
[ -d "$SRC" ] || { echo "error: no $SRC: run 'make apply'" >&2; exit 1; }
if [ ! -f "$B/build.ninja" ]; then
    echo "vfio-user: configuring libvfio-user ($SRC)"
    rm -rf "$B"
    if ! meson setup "$B" "$SRC" -Ddebug-logs=enabled >out/libvfio-user-setup.log 2>&1; then
        tail -n 10 out/libvfio-user-setup.log >&2; rm -rf "$B"
        echo "error: meson setup of libvfio-user failed (log: out/libvfio-user-setup.log)" >&2
        exit 1
    fi
fi
if ! ninja -C "$B" samples/gpio-pci-idio-16 >out/libvfio-user-ninja.log 2>&1; then
    tail -n 10 out/libvfio-user-ninja.log >&2
    echo "error: building gpio-pci-idio-16 failed (log: out/libvfio-user-ninja.log)" >&2
    exit 1
fi
