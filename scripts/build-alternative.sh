#!/usr/bin/env bash
# Build the comparison variant (alternative-patches/*.patch on the series'
# base commit: "ram-below-4g" cut at 1 MiB and, on q35 with SMM, at the TSEG
# base, the pieces above 1 MiB unmergeable; vhost keeps unmergeable sections
# apart only at page boundaries; not part of the series) with the same
# options, for side-by-side
# measurements: out/qemu-alternative/build/.  Rebuilt when the queue changes.
set -euo pipefail
cd "$(dirname "$0")/.."
A=out/qemu-alternative
stamp=$(cat alternative-patches/*.patch | sha256sum | cut -c1-16)
if [ "$(cat "$A/.complete" 2>/dev/null)" != "$stamp" ]; then
    echo "alternative: extracting the base commit (debian-base) into $A, applying alternative-patches/"
    rm -rf "$A.tmp"; mkdir -p "$A.tmp"
    git -C out/qemu-src archive debian-base | tar -x -C "$A.tmp"
    for p in alternative-patches/*.patch; do
        patch -s -p1 -d "$A.tmp" < "$p"
    done
    # keep the old build tree (ccache and ninja do the rest)
    [ -d "$A/build" ] && mv "$A/build" "$A.tmp/build"
    echo "$stamp" > "$A.tmp/.complete"
    rm -rf "$A"; mv "$A.tmp" "$A"
fi
exec scripts/build.sh "$A" build
