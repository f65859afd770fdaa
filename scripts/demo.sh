#!/usr/bin/env bash
# The demonstration `make` ends with: a real vfio-user device (libvfio-user's
# gpio-pci-idio-16) attached to pc and q35 machines while SeaBIOS boots;
# how often does the device lose its DMA mapping of guest RAM above 1 MiB?
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-vfio-user.sh
echo "demo: SeaBIOS POST with a vfio-user device, counting DMA unmaps of RAM above 1 MiB"
/usr/bin/python3 scripts/dma_churn.py --csv out/dma-churn.csv --svg out/dma-churn.svg \
    --markdown out/dma-churn.md "$@"
