#!/usr/bin/env bash
# Build unpatched QEMU 10.2.2 (the series' base commit) with the same options,
# once, for side-by-side measurements: out/qemu-unpatched/build/.
set -euo pipefail
cd "$(dirname "$0")/.."
U=out/qemu-unpatched
if [ ! -f "$U/.complete" ]; then
    echo "unpatched: extracting the base commit (debian-base) into $U"
    rm -rf "$U" "$U.tmp"; mkdir -p "$U.tmp"
    git -C out/qemu-src archive debian-base | tar -x -C "$U.tmp"
    touch "$U.tmp/.complete"
    mv "$U.tmp" "$U"
fi
exec scripts/build.sh "$U" build
