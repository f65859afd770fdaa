#!/usr/bin/env bash
# Configure (once) and build the patched libvirt in out/libvirt-src/build:
# the QEMU driver, the daemons, virsh and the unit tests (tests/libvirt-unit.sh
# runs them).  Nothing is installed: tests/e2e/libvirt-native.sh runs the
# daemons from the build tree (build/run).
#   scripts/build-libvirt.sh [SRC]
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
SRC=${1:-out/libvirt-src}
B=$SRC/build

die() { echo "error: $*" >&2; exit 1; }
[ -d "$SRC" ] || die "no $SRC: run 'make apply-libvirt'"

# Debian's own python3 and tools (not a pyenv one first in PATH), ccache.
export PATH=/usr/lib/ccache:/usr/sbin:/usr/bin:/sbin:/bin
export CCACHE_BASEDIR=$TOP CCACHE_NOHASHDIR=true
MESON_ARGS=(
    -Dsystem=true -Dinit_script=none -Drpath=disabled
    -Ddocs=disabled -Dtests=enabled -Dexpensive_tests=disabled -Dnls=disabled
    -Ddriver_qemu=enabled -Ddriver_libvirtd=enabled -Ddriver_remote=enabled
    -Dqemu_user=libvirt-qemu -Dqemu_group=libvirt-qemu
    -Ddriver_test=enabled
    -Ddriver_bhyve=disabled -Ddriver_esx=disabled -Ddriver_hyperv=disabled
    -Ddriver_interface=disabled -Ddriver_libxl=disabled -Ddriver_lxc=disabled
    -Ddriver_ch=disabled -Ddriver_network=disabled -Ddriver_openvz=disabled
    -Ddriver_secrets=disabled -Ddriver_vbox=disabled -Ddriver_vmware=disabled
    -Ddriver_vz=disabled
    -Dstorage_dir=disabled -Dstorage_disk=disabled -Dstorage_fs=disabled
    -Dstorage_gluster=disabled -Dstorage_iscsi=disabled
    -Dstorage_iscsi_direct=disabled -Dstorage_lvm=disabled
    -Dstorage_mpath=disabled -Dstorage_rbd=disabled -Dstorage_scsi=disabled
    -Dstorage_vstorage=disabled -Dstorage_zfs=disabled
    -Dsecdriver_apparmor=disabled -Dapparmor_profiles=disabled
    -Dsecdriver_selinux=disabled -Dwireshark_dissector=disabled
    -Dbash_completion=disabled -Dsasl=disabled -Dlibssh=disabled -Dlibssh2=disabled
)
stamp="$B/.merge-barriers-configure"
want=$(printf '%s\n' "${MESON_ARGS[@]}")
if [ ! -f "$B/build.ninja" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "build-libvirt: configuring $B"
    rm -rf "$B"
    if ! meson setup "${MESON_ARGS[@]}" "$SRC" "$B" >out/libvirt-configure.log 2>&1; then
        tail -n 15 out/libvirt-configure.log >&2
        die "libvirt configure failed (log: out/libvirt-configure.log)"
    fi
    printf '%s\n' "$want" > "$stamp"
fi

# Everything: the daemons, virsh, the driver modules, the tests and their mocks.
echo "build-libvirt: ninja ($B)"
start=$(date +%s)
if ! ninja -C "$B" > "$B/ninja-merge-barriers.log" 2>&1; then
    grep -E '^FAILED|error:' "$B/ninja-merge-barriers.log" | head -n 20 >&2
    die "libvirt build failed (log: $B/ninja-merge-barriers.log)"
fi
echo "build-libvirt: done in $(( $(date +%s) - start ))s"
