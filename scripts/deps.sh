#!/usr/bin/env bash
# Install the Debian packages the build and the tests need, only when missing.
# Usage: scripts/deps.sh [group...]   groups: build (default), vfio-user, e2e, libvirt,
#                                      libvirt-build
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt-private.sh

groups=("${@:-build}")
want=()
for g in "${groups[@]}"; do
    case "$g" in
    build)
        want+=(gcc make git ninja-build pkg-config flex bison python3-venv dpkg-dev
               ccache libglib2.0-dev libpixman-1-dev libfdt-dev libslirp-dev
               xz-utils ipxe-qemu
               meson/bookworm-backports python3-pycotap/bookworm-backports
               seabios/bookworm-backports qemu-system-data/bookworm-backports) ;;
    vfio-user)
        want+=(libjson-c-dev libcmocka-dev) ;;
    e2e)
        # dma_churn.py's OVMF rows (plain and secure boot firmware);
        # vhost_churn.py traces the vhost-user backend's mmap/munmap;
        # vhost_slots.py and migration-stock.py: DPDK's dpdk-testpmd (in
        # dpdk-dev) with the net_vhost driver and its mempool as the
        # 8-region vhost-user backend.
        want+=(ovmf strace dpdk-dev librte-net-vhost23 librte-mempool-ring23) ;;
    libvirt)
        # libvirt-daemon-driver-qemu needs a qemu-system-x86 package installed
        # (the tests run the patched binary through <emulator>).
        want+=(qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports
               libvirt-daemon-driver-qemu/bookworm-backports
               libvirt-daemon/bookworm-backports
               libvirt-daemon-log/bookworm-backports
               libvirt-clients/bookworm-backports
               libvirt-daemon-common/bookworm-backports
               libvirt-common/bookworm-backports
               libvirt0/bookworm-backports
               libvirt-l10n/bookworm-backports) ;;
    libvirt-build)
        # building libvirt 11.3.0 (libvirt-patches/) with the QEMU driver only;
        # libnl: its Linux bridge code does not build without it.
        want+=(libxml2-dev libxml2-utils xsltproc libgnutls28-dev libjson-c-dev
               libtirpc-dev libnl-3-dev libnl-route-3-dev perl) ;;
    *) die "unknown dependency group '$g'" ;;
    esac
done

# A package counts as present when installed, and for the backports ones when
# the installed version is the backport (meson >= 1.5 etc.).
missing=()
for spec in "${want[@]}"; do
    pkg=${spec%%/*}
    st=$(dpkg-query -W -f '${db:Status-Status} ${Version}' "$pkg" 2>/dev/null || true)
    case "$st" in
    "installed "*)
        if [ "$spec" != "$pkg" ] && [[ "$st" != *bpo* ]]; then
            missing+=("$spec")
        fi ;;
    *) missing+=("$spec") ;;
    esac
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        die "need root to install Debian packages; as root run: apt-get install ${missing[*]} (backports via bookworm-backports)"
    fi
fi
APT_DIR=$PWD/out/apt
apt_private_setup
"${sudo[@]}" mkdir -p "$APT_DIR"
apt_private_update
if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get "${APT_OPTS[@]}" -q -y \
        --no-install-recommends install "${missing[@]}" >"$APT_DIR/install.log" 2>&1; then
    tail -n 15 "$APT_DIR/install.log" >&2
    die "apt-get install failed (log: $APT_DIR/install.log)"
fi
echo "deps: done"
