#!/usr/bin/env bash
# End-to-end: a real vfio-user peer sees no DMA unmap of guest RAM above 1 MiB
# during SeaBIOS POST with the default (10.2) machine types, and does see them
# with the 10.1 types and with merge-barriers= (off).  TCG always, KVM when
# /dev/kvm is usable (otherwise reported as skipped); guest RAM on 4 KiB
# pages and on 2 MiB and 1 GiB hugepages.  Speaks TAP.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/build-vfio-user.sh >&2
exec /usr/bin/python3 scripts/dma_churn.py --tap
