#!/usr/bin/env bash
# Configure (once) and build the patched QEMU in out/qemu-src/build, then
# publish the binary as out/qemu-system-x86_64.
#   scripts/build.sh [SRC [BUILD_DIR_NAME [extra configure args...]]]
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
SRC=${1:-out/qemu-src}
BDIR=${2:-build}
shift $(( $# > 2 ? 2 : $# ))
B=$SRC/$BDIR

die() { echo "error: $*" >&2; exit 1; }
[ -d "$SRC" ] || die "no $SRC: run 'make apply'"

# Firmware comes from Debian's packages (seabios, ipxe-qemu, qemu-system-data).
FIRMWARE_DIRS=(/usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu)

# ccache through Debian's compiler wrappers; CCACHE_BASEDIR makes hits
# independent of where the checkout is (a CI clone reuses a developer's cache).
export CCACHE_BASEDIR=$TOP CCACHE_NOHASHDIR=true
CONFIGURE_ARGS=(
    --cc=/usr/lib/ccache/gcc --cxx=/usr/lib/ccache/g++
    --target-list=x86_64-softmmu
    --prefix=/usr --disable-relocatable
    "--firmwarepath=$(IFS=:; echo "${FIRMWARE_DIRS[*]}")"
    --python=/usr/bin/python3 --disable-download
    --enable-kvm --enable-tcg --enable-slirp --enable-fdt=system
    --disable-docs --disable-install-blobs
    --disable-rust --enable-tools --disable-guest-agent --disable-user
    --disable-gtk --disable-sdl --disable-opengl --disable-spice --disable-xen
    "$@"
)
stamp="$B/.merge-barriers-configure"
want=$(printf '%s\n' "${CONFIGURE_ARGS[@]}")
if [ ! -f "$B/build.ninja" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "build: configuring $B"
    rm -rf "$B"; mkdir -p "$B"
    if ! (cd "$B" && "$TOP/$SRC/configure" "${CONFIGURE_ARGS[@]}") >"$TOP/out/$BDIR-configure.log" 2>&1; then
        tail -n 15 "out/$BDIR-configure.log" >&2
        die "configure failed (log: out/$BDIR-configure.log)"
    fi
    printf '%s\n' "$want" > "$stamp"
fi

# A binary run from its build tree resolves every data and firmware directory
# inside $B/qemu-bundle (util/cutils.c:get_relocated_path()).  Point the
# bundle's copies of the firmware directories at the Debian packages so the
# build-tree binary (used by the qtests) finds bios-256k.bin, kvmvapic.bin,
# efi-e1000.rom like an installed one.
for d in "${FIRMWARE_DIRS[@]}"; do
    mkdir -p "$B/qemu-bundle$d"
    for f in "$d"/*; do
        [ -f "$f" ] || continue
        [ -e "$B/qemu-bundle$f" ] || ln -sfn "$f" "$B/qemu-bundle$f"
    done
done

targets=(qemu-system-x86_64 ${BUILD_TARGETS:-})
echo "build: ninja ${targets[*]} ($B)"
start=$(date +%s)
if ! ninja -C "$B" "${targets[@]}" > "$B/ninja.log" 2>&1; then
    grep -E '^FAILED|error:' "$B/ninja.log" | head -n 20 >&2
    die "build failed (log: $B/ninja.log)"
fi
echo "build: done in $(( $(date +%s) - start ))s"
