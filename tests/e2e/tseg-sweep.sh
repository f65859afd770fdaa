#!/usr/bin/env bash
# End-to-end: OVMF Secure Boot (SMM) on q35 for -m 1G, 2G, 2560M, 4G, 8G and
# extended-tseg-mbytes 16 and 32: with the default barriers of pc-q35-10.2
# (1 MiB and the TSEG base, which moves with both) the system memory view
# never removes RAM outside the TSEG window; pc-q35-10.1 does, unless it is
# given merge-layout=latest (no address written: the machine computes its
# own 16 MiB TSEG's base).  Speaks TAP.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec /usr/bin/python3 scripts/tseg_sweep.py --tap --markdown out/tseg-sweep.md
