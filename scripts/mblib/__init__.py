"""The harness's library: what the experiments in scripts/ share.

Each experiment (dma_churn.py, vhost_churn.py, vhost_slots.py,
proxy_churn.py, tseg_sweep.py, kvm_largepages.py, bench_cost.py,
compare_alternative.py, fuzz_property.py) is an entry point over these
modules and keeps its own setups, runs and checks; no experiment imports
another.  The tests in tests/e2e/ use them too.

  guestram  guest RAM backends (GUEST_RAM, GuestRam), hugepage pools and
            hugetlbfs mounts, running a plan grouped by backend
            (by_guest_ram), HostLimit, MiB/GiB
  qmp       QMP and qtest connections (QMP, QTestConn, connect_unix),
            stop(), wait_migration(), wait_running()
  machine   firmware arguments and end-of-boot markers, machine options,
            starting QEMU and waiting for the boot (connect_qmp, wait_boot),
            the TSEG window, the churn experiments' shared options and
            reference rows, replay_pam()
  parsers   log and trace parsers: vfio-user server logs, topology, KVM
            memslot, vhost_user_write and strace events, info mtree -f;
            RAM above 1 MiB against the TSEG window (classify)
  peers     the real peers: libvfio-user's vfio-user server,
            qemu-storage-daemon (vhost-user-blk), DPDK's dpdk-testpmd
            (vhost-user net) with its QEMU command line and DIMMs
  report    TAP (Tap), log() to stderr, text and Markdown tables with the
            measurement stamp, CSV, grouped bar charts (SVG)
"""
