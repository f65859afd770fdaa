#!/usr/bin/env bash
# End-to-end: a real vhost-user backend (qemu-storage-daemon's vhost-user-blk
# export, run under strace).  vhost joins sections across merge barriers, so
# the backend sees with the default (10.2) machine types what it sees without
# barriers: no removal of guest RAM above 1 MiB while SeaBIOS or OVMF boot
# (firmware starts the device after its last change vhost can see), and on
# 4 KiB pages the same churn as the 10.1 types and merge-barriers= (off)
# while firmware's PAM programming is replayed with the device running.
# Guest RAM on 4 KiB pages, 2 MiB and 1 GiB hugepages (reserved for the run
# and given back; a row the host cannot reserve is skipped with the reason)
# and hugetlbfs files on two NUMA nodes: on hugepages no row may remove RAM,
# and on every row the device must work (disk read, backend up).  Speaks TAP.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec /usr/bin/python3 scripts/vhost_churn.py --tap
