#!/usr/bin/env python3
"""What a memory-slot boundary inside a host hugepage costs KVM.

KVM maps guest memory with a large page only where one memory slot covers
the whole aligned large page and the host backs it with a page at least as
large.  A merge barrier inside RAM is a memory-slot boundary: with 1 GiB
host pages, a barrier inside a gigabyte (the TSEG barrier, 0x7c000000 with
-m 2G) keeps KVM from mapping that gigabyte with one 1 GiB page.

q35 with SeaBIOS under KVM, guest RAM on 2 MiB and 1 GiB hugepages (memfd),
boots to SeaBIOS's end ("No bootable device."), then reads KVM's per-VM
page-table statistics (debugfs: /sys/kernel/debug/kvm/PID-FD/pages_4k,
pages_2m, pages_1g: the guest memory KVM has mapped at each level) for
merge-barriers= (none), merge-barriers=1M and merge-barriers=1M,0x7c000000.
SeaBIOS touches the start of RAM and its top (its tables below 2 GiB), so
the gigabyte [1 GiB, 2 GiB) is mapped in each run.

Needs root (hugepages, debugfs) and a usable /dev/kvm; prints what it
cannot do and exits 0 (a measurement, not a test).

Usage: kvm_largepages.py [--qemu BIN] [--markdown F] [--csv F]
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile

from mblib.guestram import GUEST_RAM, GuestRam, HostLimit, by_guest_ram
from mblib.machine import connect_qmp, firmware_args, kvm_usable, wait_boot
from mblib.qmp import stop
from mblib.report import log, text_table, write_csv, write_markdown

DEBUGFS = "/sys/kernel/debug"
BARRIERS = ["", "1M", "1M,,0x7c000000"]
MEMORIES = ["memfd-2M", "memfd-1G"]


def debugfs_kvm():
    """The KVM debugfs directory, mounting debugfs if needed."""
    if not os.path.isdir(os.path.join(DEBUGFS, "kvm")):
        subprocess.run(["mount", "-t", "debugfs", "none", DEBUGFS],
                       capture_output=True)
    path = os.path.join(DEBUGFS, "kvm")
    if not os.path.isdir(path):
        raise HostLimit("no KVM debugfs (needs root and debugfs)")
    return path


def vm_pages(kvm_dir, pid):
    """KVM's page statistics of the VM of process `pid`."""
    dirs = glob.glob(os.path.join(kvm_dir, f"{pid}-*"))
    if len(dirs) != 1:
        raise RuntimeError(f"expected one KVM VM of pid {pid}: {dirs}")
    return {lvl: int(open(os.path.join(dirs[0], f"pages_{lvl}")).read())
            for lvl in ("4k", "2m", "1g")}


def run_one(qemu, memory, barriers, workdir, kvm_dir):
    ram = GuestRam(memory)
    fw_args, watch, ends = firmware_args("SeaBIOS", workdir, None)
    qmp_path = os.path.join(workdir, "qmp.sock")
    err = os.path.join(workdir, "qemu.err")
    args = [qemu, "-machine",
            f"pc-q35-10.2{ram.machine_option()},merge-barriers={barriers}",
            "-accel", "kvm", "-m", "2G"] + ram.args() + \
        ["-display", "none", "-nodefaults",
         "-qmp", f"unix:{qmp_path},server=on,wait=off"] + fw_args
    proc = None
    try:
        with open(err, "wb") as errf:
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                    stderr=errf)
        qmp = connect_qmp(proc, qmp_path, err)
        wait_boot(proc, qmp, watch, ends, err)
        pages = vm_pages(kvm_dir, proc.pid)
        qmp.cmd("quit")
        qmp.close()
        proc.wait(timeout=30)
    finally:
        stop(proc, 5)
    return pages


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu", default="out/qemu-system-x86_64")
    ap.add_argument("--markdown")
    ap.add_argument("--csv")
    opts = ap.parse_args()
    try:
        if not kvm_usable():
            raise HostLimit("/dev/kvm is not usable on this machine")
        kvm_dir = debugfs_kvm()
    except HostLimit as e:
        log(f"kvm-largepages: not measured: {e}")
        if opts.markdown:
            write_markdown(opts.markdown, ["not measured"], [[str(e)]])
        return 0
    plan = [(m, b) for m in MEMORIES for b in BARRIERS]
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="kvm-largepages-") as tmp:
        for i, (memory, barriers), what, workdir, _, skip in by_guest_ram(
                plan, lambda p: p[0], tmp,
                lambda p: f"{GUEST_RAM[p[0]][0]}, merge-barriers={p[1]}"):
            try:
                if skip:
                    raise HostLimit(skip)
                pages = run_one(opts.qemu, memory, barriers, workdir,
                                kvm_dir)
            except HostLimit as e:
                log(f"    skipped: {e}")
                notes.append(f"skipped {what}: {e}")
                continue
            log(f"    KVM pages mapped: 4k {pages['4k']}, 2m {pages['2m']},"
                f" 1g {pages['1g']}")
            rows.append([GUEST_RAM[memory][0],
                         barriers.replace(",,", ",") or "(none)",
                         str(pages["4k"]), str(pages["2m"]),
                         str(pages["1g"])])
    if rows and all(r[2:] == ["0", "0", "0"] for r in rows):
        nested = "hypervisor" in open("/proc/cpuinfo").read()
        tdp = "/sys/module/kvm/parameters/tdp_mmu"
        notes.append("not measurable on this host: KVM's page statistics "
                     "stayed 0 after every boot"
                     + (" (the host is itself a virtual machine"
                        if nested else " (")
                     + (f"; kvm tdp_mmu={open(tdp).read().strip()}"
                        if os.path.exists(tdp) else "") + ")")
    header = ["guest RAM", "merge-barriers", "KVM 4k pages",
              "KVM 2m pages", "KVM 1g pages"]
    print(text_table(header, rows))
    print("q35 (pc-q35-10.2), SeaBIOS, -m 2G, KVM: pages KVM has mapped "
          "after the boot (debugfs pages_4k/2m/1g of the VM)")
    for n in notes:
        print(n)
    if opts.markdown:
        write_markdown(opts.markdown, header, rows, notes)
    if opts.csv:
        write_csv(opts.csv, header, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
