#!/usr/bin/env bash
# The demonstration `make` ends with: a real vfio-user device (libvfio-user's
# gpio-pci-idio-16) attached to pc and q35 machines while SeaBIOS boots;
# how often does the device lose its DMA mapping of guest RAM above 1 MiB?
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-vfio-user.sh
echo "demo: SeaBIOS and OVMF boot with a vfio-user device, counting DMA unmaps of RAM above 1 MiB"
/usr/bin/python3 scripts/dma_churn.py --csv out/dma-churn.csv --svg out/dma-churn.svg \
    --markdown out/dma-churn.md "$@"
# The vhost-user backend is qemu-storage-daemon, built by `make`:
# SeaBIOS rows only (a few seconds).
qsd=out/qemu-src/build/storage-daemon/qemu-storage-daemon
if [ -x "$qsd" ] && command -v strace >/dev/null; then
    echo "demo: SeaBIOS with a vhost-user-blk backend, counting its unmaps of RAM above 1 MiB"
    /usr/bin/python3 scripts/vhost_churn.py --qsd "$qsd" --setup pc --setup q35 \
        --csv out/vhost-churn.csv --svg out/vhost-churn.svg --markdown out/vhost-churn.md
else
    echo "demo: vhost-user skipped (needs $qsd, built by make build, and strace)"
fi
# the tables into docs/measurements/, the headlines into the README
/usr/bin/python3 scripts/readme_tables.py dma-churn vhost-churn
