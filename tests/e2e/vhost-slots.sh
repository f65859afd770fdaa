#!/usr/bin/env bash
# End-to-end: consumers with a fixed number of mappings.  A vhost-user
# backend with 8 memory regions (DPDK's vhost
# library: dpdk-testpmd with net_vhost, as OVS-DPDK uses it) next to the
# default barriers.  The device carries packets (SeaBIOS network boot through
# iPXE, after the boot and after two guest resets), and QEMU accepts as many
# 128 MiB DIMMs next to the backend, and uses as many regions, as stock
# 10.2.2, on pc and q35, 4 KiB and 2 MiB RAM (2 MiB hugepages reserved for
# the run and given back; skipped with the reason where the host cannot).
# Next to them, the same machines with a vfio-user device (libvfio-user's
# gpio sample: at most 16 DMA regions, not advertised): the DIMMs with which
# the server still maps every region through a SeaBIOS boot.
# The table goes to out/vhost-slots.md.  Speaks TAP.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/build-vfio-user.sh >&2
exec /usr/bin/python3 scripts/vhost_slots.py --tap \
    --unpatched out/qemu-unpatched/build/qemu-system-x86_64 \
    --markdown out/vhost-slots.md --csv out/vhost-slots.csv
