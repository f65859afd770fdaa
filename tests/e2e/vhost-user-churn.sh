#!/usr/bin/env bash
# End-to-end: a real vhost-user backend (qemu-storage-daemon's vhost-user-blk
# export, run under strace) never unmaps its mapping of guest RAM above 1 MiB
# with the default (10.2) machine types: neither while SeaBIOS or OVMF boot
# nor while firmware's PAM programming is replayed with the device running.
# With the 10.1 types and merge-barriers= (off) the replay makes it unmap and
# map that RAM again (the boot alone does not: firmware starts the device
# after its last change vhost can see).  Guest RAM on 4 KiB pages, 2 MiB and
# 1 GiB hugepages (reserved for the run and given back; a row the host
# cannot reserve is skipped with the reason) and hugetlbfs files on two NUMA
# nodes: on hugepages no row may remove RAM, and on every row the device
# must work (disk read, backend up).  Speaks TAP.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec /usr/bin/python3 scripts/vhost_churn.py --tap
