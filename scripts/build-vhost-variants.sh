#!/usr/bin/env bash
# Build the vhost policy variants (alternative-patches/vhost-policies/: not
# part of the series) that `make bench` compares with the series' choice
# (vhost joins sections across barriers):
#   always              vhost honours every barrier on a page boundary (v3)
#   configurable-slots  only vhost-user backends with configurable memory
#                       slots honour them
# Each is the series plus one vhost.c change, built in out/qemu-src's own
# build tree (one object and the link), installed as
# out/variants/NAME/qemu-system-x86_64; the work tree is restored after.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=out/qemu-src
if [ -n "$(git -C "$SRC" status --porcelain --untracked-files=no)" ]; then
    echo "vhost variants: $SRC has uncommitted changes; commit or stash them first" >&2
    exit 1
fi
trap 'git -C "$SRC" checkout -q -- hw/virtio/vhost.c' EXIT
for p in alternative-patches/vhost-policies/*.patch; do
    name=$(basename "$p" .patch)
    out=out/variants/$name/qemu-system-x86_64
    stamp=$( (cat "$p"; git -C "$SRC" rev-parse HEAD) | sha256sum | cut -c1-16)
    if [ -x "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
        echo "vhost variants: $name up to date"
        continue
    fi
    echo "vhost variants: building $name"
    git -C "$SRC" apply "$PWD/$p"
    ninja -C "$SRC/build" qemu-system-x86_64 >out/variants-$name.log 2>&1 ||
        { tail -n 20 out/variants-$name.log >&2; exit 1; }
    mkdir -p "$(dirname "$out")"
    install -m 755 "$SRC/build/qemu-system-x86_64" "$out"
    echo "$stamp" >"$out.stamp"
    git -C "$SRC" checkout -q -- hw/virtio/vhost.c
done
# the series' binary again in the build tree
ninja -C "$SRC/build" qemu-system-x86_64 >out/variants-restore.log 2>&1
